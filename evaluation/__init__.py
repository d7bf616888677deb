"""Evaluation: step-level (step extraction, the paper's metrics, teacher-forced inference), live
(roles, team, tool executors, the agent loop, whole test sets judged by an LLM) and the results
table."""
from __future__ import annotations

from core.errors import ProjectError


class EvaluationError(ProjectError, ValueError):
    """Bad evaluation input; the message names the file (and line) at fault."""


def check_test_set(ids, path, what: str = "record") -> None:
    """A test set is scored only when it has something and each id once: `ids` lists (id,
    record number) pairs; an empty set or a repeated id stops, naming the records."""
    first: dict = {}
    for key, number in ids:
        if key in first:
            raise EvaluationError(f"{path}: {what} id {key!r} appears twice (records {first[key]} and "
                                  f"{number}); give each its own id")
        first[key] = number
    if not first:
        raise EvaluationError(f"{path}: the test set is empty (no {what}s); check the file and its format")
