"""The error surface every command line shares: the project's own errors (bad recipe, data, spec,
template, LLM endpoint; OS errors on files) become one or two lines on stderr and an exit code,
never a traceback. A traceback is shown only with `--debug` or ALPHA_UMI_DEBUG=1; anything that
is not one of these errors is a bug and keeps its traceback.

    def main(argv): ...                      # returns an exit code
    if __name__ == "__main__":
        sys.exit(run_cli("train.py", main))
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

DEBUG_ENV = "ALPHA_UMI_DEBUG"
EXIT_BAD_INPUT = 2


class ProjectError(Exception):
    """Base of the errors a user can fix; the message names the file / record / key and the fix."""
    exit_code = EXIT_BAD_INPUT


class DataError(ProjectError, ValueError):
    """Data that cannot be trained on (no examples left, a batch size larger than the data...)."""


class RunDirError(ProjectError, OSError):
    """The run directory cannot hold the run (not writable, not enough free space)."""


class DiskFull(RunDirError):
    """A write that failed for lack of space; names the path and the space it needs."""


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@contextmanager
def disk_full_as_error(path, need: int):
    """Turn a write of `path` that fails for lack of space (ENOSPC, or torch.save's "file write
    failed") into DiskFull: one line with the path, the space needed and what is free."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        full = exc.errno == errno.ENOSPC if isinstance(exc, OSError) else "write failed" in str(exc)
        if not full or isinstance(exc, ProjectError):
            raise
        try:
            free = human_size(shutil.disk_usage(Path(path).parent).free)
        except OSError:
            free = "unknown"
        raise DiskFull(f"{path}: no space left on the device to write it (it needs about "
                       f"{human_size(need)}, {free} free); free some space and rerun the same "
                       f"command to resume") from None


def debug_requested(argv: Sequence[str] = ()) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false")


def describe_os_error(exc: OSError) -> str:
    """`cannot write /path: No space left on device` style, with a hint for the common cases."""
    path = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc)
    what = {errno.ENOSPC: "free some space or point run.dir at a larger disk",
            errno.EACCES: "check the permissions or choose another directory",
            errno.EROFS: "the filesystem is read-only; choose another directory",
            errno.ENOENT: "check the path"}.get(exc.errno)
    head = f"{path}: {reason}" if path else reason
    return f"{head} ({what})" if what else head


def format_error(exc: BaseException) -> str:
    text = describe_os_error(exc) if isinstance(exc, OSError) and not isinstance(exc, ProjectError) \
        else str(exc)
    return text.strip() or type(exc).__name__


def run_cli(prog: str, main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` (argv without `--debug`) and turn the project's errors into messages."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if debug:
        return main(argv)
    try:
        return main(argv)
    except ProjectError as exc:
        print(f"{prog}: error: {format_error(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # unreadable input, unwritable output, full disk, refused connection
        print(f"{prog}: error: {format_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
