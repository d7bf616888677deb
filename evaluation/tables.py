"""One table model, two renderings: Markdown (GitHub tables, footnotes) and HTML (escaped).

A Table has column names, rows of values and, for a blank value (None), an optional footnote
number. Numeric tables right-align every column but the first and print numbers with two decimals.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

BLANK = "–"


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    numeric: bool = False                                     # numbers right-aligned, 2 decimals
    notes: dict[tuple[int, int], int] = field(default_factory=dict)  # (row, column) -> footnote


def cell_text(value) -> str:
    if value is None:
        return BLANK
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_markdown(table: Table) -> str:
    esc = lambda t: str(t).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    align = "|---" + ("|---:" if table.numeric else "|---") * (len(table.columns) - 1) + "|"
    lines = ["| " + " | ".join(table.columns) + " |", align]
    for i, row in enumerate(table.rows):
        cells = []
        for j, value in enumerate(row):
            text = esc(cell_text(value) if table.numeric else value)
            note = table.notes.get((i, j))
            cells.append(f"{text}[^{note}]" if note and value is None else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr>"]
    for i, row in enumerate(table.rows):
        cells = []
        for j, value in enumerate(row):
            if not table.numeric or j == 0 or not (value is None or _is_number(value)):
                cells.append(f"<td>{e(str(value))}</td>")
                continue
            note = table.notes.get((i, j))
            sup = f"<sup><a href='#note{note}'>{note}</a></sup>" if note and value is None else ""
            cells.append(f"<td class='n'>{e(cell_text(value))}{sup}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)
