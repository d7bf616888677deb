"""Static (step-level) evaluation: step extraction, the paper's metrics and the results table."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file (and line) at fault."""


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write through a temporary file in the same folder and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
