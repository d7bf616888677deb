"""The one redaction applied to everything a run writes (recipe copy, W&B config and recorded
command line, exports' configs, logs): values under keys that look like credentials, and any
credential found in the environment wherever it appears."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "credential", "authorization")
MASK = "***"
MIN_SECRET_LEN = 8  # shorter environment values ("1", "true") are not treated as credentials


def looks_secret(key: str) -> bool:
    k = str(key).lower()
    return any(w in k for w in SECRET_WORDS) and not k.endswith("_env")


def env_credentials(environ=None) -> list[str]:
    """Values of environment variables whose names look like credentials, longest first."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if looks_secret(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, credentials: list[str] | None = None) -> str:
    for value in env_credentials() if credentials is None else credentials:
        text = text.replace(value, MASK)
    return text


def redact(data, _credentials: list[str] | None = None):
    """A copy safe to write: secret-looking keys masked, environment credentials masked anywhere."""
    creds = env_credentials() if _credentials is None else _credentials
    if isinstance(data, dict):
        return {k: (MASK if looks_secret(k) and isinstance(v, str) and v else redact(v, creds))
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact(v, creds) for v in data)
    if isinstance(data, str):
        return redact_text(data, creds)
    return data


def redact_argv(argv: list[str]) -> list[str]:
    """`a.api_key=VALUE` -> `a.api_key=***`; environment credentials masked in every word."""
    out = []
    for word in argv:
        key, eq, value = word.partition("=")
        out.append(f"{key}={MASK}" if eq and looks_secret(key.rsplit(".", 1)[-1]) and value
                   else redact_text(word))
    return out


@contextmanager
def redacted_argv():
    """While a library records sys.argv (W&B does, at init), it sees the redacted command line."""
    saved = sys.argv[:]
    sys.argv[:] = redact_argv(saved)
    try:
        yield
    finally:
        sys.argv[:] = saved
