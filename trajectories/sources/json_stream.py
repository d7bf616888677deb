"""Reading a large JSON array one element at a time, so a source file is never held whole.

`iter_json_records(file)` yields the elements of a top-level array in order (a file holding one
top-level value yields that value). It decodes the text a chunk at a time with the standard
library's `JSONDecoder.raw_decode`, so values are exactly what `json.loads` would give. Malformed
text raises the error `on_invalid(file)` raises for the whole file (the caller's reader, so the
messages name the line and column); values before the error have already been yielded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

CHUNK_CHARS = 1 << 20
_WS = " \t\n\r"
_decoder = json.JSONDecoder()


def iter_json_records(file: Path, on_invalid: Callable[[Path], object],
                      chunk_chars: int = CHUNK_CHARS) -> Iterator:
    """Elements of the top-level array of `file` (or its single top-level value)."""
    try:
        yield from _elements(file, chunk_chars)
    except (json.JSONDecodeError, UnicodeDecodeError, _Malformed):
        on_invalid(file)  # raises the reader's error for this file, with line and column
        raise ValueError(f"{file}: malformed JSON") from None  # pragma: no cover


class _Malformed(Exception):
    pass


class _Buffer:
    """The not-yet-decoded text of a file, refilled a chunk at a time."""

    def __init__(self, fh, chunk_chars: int):
        self.fh, self.chunk_chars = fh, chunk_chars
        self.text, self.eof = "", False

    def more(self) -> bool:
        if not self.eof:
            chunk = self.fh.read(self.chunk_chars)
            self.eof = not chunk
            self.text += chunk
        return not self.eof

    def skip_ws(self, pos: int) -> int:
        while True:
            while pos < len(self.text) and self.text[pos] in _WS:
                pos += 1
            if pos < len(self.text) or not self.more():
                return pos

    def decode(self, pos: int):
        """One value starting at `pos`, reading on while it may continue past the buffer."""
        while True:
            try:
                value, end = _decoder.raw_decode(self.text, pos)
            except json.JSONDecodeError:
                if not self.more():
                    raise
            else:
                # An object, array or string ends at its closing character; a number or literal
                # cut by the chunk boundary ("2." of "2.5") needs its delimiter in the buffer.
                closed = isinstance(value, (dict, list, str))
                if closed or (end < len(self.text) and self.text[end] in ",]" + _WS) \
                        or not self.more():
                    return value, end

    def drop(self, pos: int) -> int:
        """Forget the decoded text before `pos` (once it is a chunk long: copies stay linear)."""
        if pos < self.chunk_chars:
            return pos
        self.text = self.text[pos:]
        return 0


def _elements(file: Path, chunk_chars: int) -> Iterator:
    with open(file, encoding="utf-8") as fh:
        buf = _Buffer(fh, chunk_chars)
        pos = buf.skip_ws(0)
        if pos == len(buf.text) or buf.text[pos] != "[":
            # Not an array: one value, read whole (a file per record is small).
            while buf.more():
                pass
            yield json.loads(buf.text)
            return
        pos = buf.skip_ws(pos + 1)
        if pos < len(buf.text) and buf.text[pos] == "]":
            pos += 1
        else:
            while True:
                value, pos = buf.decode(pos)
                yield value
                pos = buf.skip_ws(buf.drop(pos))
                if pos == len(buf.text):
                    raise _Malformed("unterminated array")
                if buf.text[pos] == "]":
                    pos += 1
                    break
                if buf.text[pos] != ",":
                    raise _Malformed("expected ',' or ']'")
                pos = buf.skip_ws(pos + 1)
        if buf.skip_ws(pos) != len(buf.text):
            raise _Malformed("extra data after the array")
