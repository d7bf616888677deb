"""Role views of tool-selection examples (GenTool): one per-step example per record, the context
being the prompt and the target the ranking, the call, or both (role `ranking_selection`)."""
from __future__ import annotations

from typing import Mapping

from prompting.selection_template import SelectionTemplate
from .role_examples import RoleExample


def selection_role_examples(template: SelectionTemplate, record: Mapping, role: str) -> list[RoleExample]:
    return [RoleExample(f"{record['id']}#{role}", role, "per_step", template.prompt(role, record),
                        template.target(role, record))]


def selection_texts(template: SelectionTemplate, record: Mapping) -> list[str]:
    """Every text the joint view of a record renders (to train a BPE tokenizer)."""
    segs = template.prompt("ranking_selection", record) + template.target("ranking_selection", record)
    return [s.text for s in segs if s.text]
