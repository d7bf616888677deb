"""Evaluation: step-level (step extraction, the paper's metrics, teacher-forced inference), live
(roles, team, tool executors, the agent loop, whole test sets judged by an LLM) and the results
table."""
from __future__ import annotations


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file (and line) at fault."""
