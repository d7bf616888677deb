"""GenTool inference: each GenTool export of a run (ranking, selection, or the joint
ranking_selection) answers every example, with the prompt rendered by the recipe's
`template.gentool` exactly as in training; outputs are parsed with the same template."""
from __future__ import annotations

from typing import Mapping

from core.recipe import stage_order
from core.run_dir import RunDir
from core.vocabulary import GENTOOL_ROLES
from datamodules.step_context import prompt_ids
from prompting.text_encoder import TextEncoder
from prompting.selection_template import SelectionTemplate

from .. import EvaluationError
from ..agent.exports import longest_target
from ..agent.generation import context_budget, generate, load_model
from ..agent.members import PromptFit

# A joint model fills ranking and call; a dedicated ranking or selection model replaces its part.
ROLE_ORDER = ("ranking_selection", "ranking", "selection")


def find_gentool_exports(run_dir, recipe: Mapping) -> dict[str, str]:
    """{role: export folder} of the run's finished GenTool stages (a later stage of a role wins)."""
    stages = {n: s for n, s in (recipe.get("stages") or {}).items() if s.get("enabled", True)}
    found = {}
    for name in stage_order(stages):
        role = stages[name]["role"]
        stage = RunDir(run_dir).stage(name)
        if role in GENTOOL_ROLES and stage.has_export():
            found[role] = str(stage.export)
    return found


def predict(records: list[dict], exports: Mapping[str, str], template: SelectionTemplate,
            fit: PromptFit, *, batch_size: int, max_new_tokens: int | None, device: str | None = None,
            dtype: str | None = None, log=None) -> dict[str, dict]:
    """{id: {"ranking", "name", "arguments", "raw": {role: text}}} for every record; each model
    generates up to `max_new_tokens`, or (None) its longest training target."""
    if not exports:
        raise EvaluationError("no GenTool export (ranking, selection or ranking_selection stage) to evaluate")
    preds = {r["id"]: {"id": r["id"], "raw": {}} for r in records}
    for role in (r for r in ROLE_ORDER if r in exports):
        n = max_new_tokens or longest_target(exports[role], None)
        if not n:
            raise EvaluationError(f"{exports[role]}: no training record says how long a {role} output "
                                  "may be; give the generation length (evaluate.max_new_tokens, or "
                                  "--max-new-tokens)")
        model, tokenizer = load_model(exports[role], device, dtype)
        encoder = TextEncoder(tokenizer, add_bos=fit.add_bos)
        budget = context_budget(getattr(model.config, "max_position_embeddings", None), n,
                                fit.max_prompt_tokens, fit.max_length, fit.context_reserve)
        prompts = [prompt_ids(encoder, template.prompt(role, r), role, budget) for r in records]
        outs = generate(model, tokenizer, prompts, max_new_tokens=n, batch_size=batch_size)
        for rec, out in zip(records, outs):
            pred = preds[rec["id"]]
            pred["raw"][role] = out.text
            if role == "ranking":
                pred["ranking"] = template.parse_ranking(out.text)
            elif role == "selection":
                pred["name"], pred["arguments"] = template.parse_call(out.text)
            else:
                pred["ranking"], pred["name"], pred["arguments"] = template.parse_joint(out.text)
        if log:
            log(f"{role}: {len(records)} examples")
        del model
    return preds

