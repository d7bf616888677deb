"""Static (step-level) evaluation: step extraction, the paper's metrics and the results table."""
from __future__ import annotations

from pipeline.atomic_files import write_text_atomic  # noqa: F401  (re-exported for evaluation modules)


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file (and line) at fault."""
