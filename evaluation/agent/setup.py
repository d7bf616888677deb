"""A trained run's team, as evaluation builds it: which exports (or servers) play which role and
how they decode, from the `evaluate:` keys of the recipe schema (core/recipe_schema.json, the one
home of their defaults) or the same keys from the command line."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from core.recipe import evaluate_defaults
from core.vocabulary import TEAM_ROLES
from prompting.prompt_template import PromptTemplate

from .. import EvaluationError
from .exports import find_exports, generation_lengths, resolve_mode
from .members import Decoding, PromptFit
from .team import Team, build_team


def evaluate_settings(node: Mapping | None) -> dict:
    """An `evaluate:` node with the keys it leaves out set to the schema's defaults; a key the
    schema does not know is an error naming it."""
    defaults = evaluate_defaults()
    given = {k: v for k, v in dict(node or {}).items() if k != "enabled"}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise EvaluationError(f"evaluate: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(defaults))})")
    return {**defaults, **given}


@dataclass(frozen=True)
class TeamSettings:
    """Which models play (mode, export overrides) and how they decode."""
    mode: str
    max_new_tokens: int | Mapping | None
    batch_size: int
    do_sample: bool
    temperature: float
    top_p: float
    seed: int
    device: str | None
    dtype: str | None
    max_prompt_tokens: int | None
    models: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: Mapping) -> "TeamSettings":
        """From `evaluate_settings(...)`."""
        return cls(**{**{k: cfg[k] for k in cls.__dataclass_fields__}, "models": dict(cfg["models"] or {})})


def run_team(run_dir, recipe: Mapping, settings: TeamSettings, *,
             endpoints: Mapping[str, Mapping] | None = None, eos_text: str | None = None,
             log=None) -> tuple[Team, dict]:
    """(team, meta) for the run's exports (and `endpoints`: {role: LLM client settings}); meta
    records the mode, the models and the decoding for the metrics files."""
    try:
        template = PromptTemplate(recipe["template"])
    except ValueError as exc:
        raise EvaluationError(f"recipe template: {exc}") from None
    exports = {**find_exports(run_dir, recipe), **dict(settings.models)}
    mode = resolve_mode(settings.mode, {**exports, **{r: "endpoint" for r in endpoints or {}}}, run_dir)
    lengths, longest = generation_lengths(settings.max_new_tokens, exports, mode)
    short = {t: (lengths[t], longest[t]) for t in lengths if longest[t] and lengths[t] < longest[t]}
    if short and log:
        log("warning: generation shorter than the longest training target for "
            + ", ".join(f"{t} ({n} < {m} tokens)" for t, (n, m) in short.items()))
    decoding = Decoding(lengths, settings.batch_size, settings.do_sample, settings.temperature,
                        settings.top_p, settings.seed)
    team = build_team(template, mode, exports, fit=PromptFit.of_recipe(recipe, settings.max_prompt_tokens),
                      decoding=decoding, endpoints=endpoints, eos_text=eos_text,
                      device=settings.device, dtype=settings.dtype)
    used = {r: exports.get(r, "endpoint") for r in (TEAM_ROLES if mode == "alpha_umi" else ("backbone",))}
    meta = {"mode": mode, "run": str(Path(run_dir)), "models": used, "template": template.name,
            "decoding": {"do_sample": settings.do_sample, "max_new_tokens": lengths,
                         "requested_max_new_tokens": settings.max_new_tokens,
                         "longest_training_target": longest,
                         **({"temperature": settings.temperature, "top_p": settings.top_p,
                             "seed": settings.seed} if settings.do_sample else {})},
            "batch_size": settings.batch_size}
    return team, meta
