"""Static (step-level) evaluation: step extraction, the paper's metrics and the results table."""
from __future__ import annotations

from core.errors import ProjectError


class EvaluationError(ProjectError, ValueError):
    """Bad evaluation input; the message names the file (and line) at fault."""
