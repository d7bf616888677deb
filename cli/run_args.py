"""Flags shared by the subcommands that run a trained run's models: where the run and its exports
are, how members decode, and which roles an OpenAI-compatible server plays instead. Defaults are
not restated here: a flag left out takes the recipe schema's `evaluate:` default
(core/recipe_schema.json) or recipes/eval/endpoint.yaml's."""
from __future__ import annotations

from typing import Mapping

from omegaconf import OmegaConf

from core.recipe import RECIPES_ROOT
from core.vocabulary import TRAINED_ROLES
from evaluation import EvaluationError
from evaluation.agent.exports import MODES

ENDPOINT_DEFAULTS = RECIPES_ROOT / "eval" / "endpoint.yaml"


def add_run_args(p) -> None:
    # dest run_dir: evaluate.py keeps the subcommand function in args.run
    p.add_argument("--run", dest="run_dir", metavar="RUN", required=True,
                   help="run directory (runs/NAME) holding the stage exports")
    p.add_argument("--recipe", nargs="+", metavar="FILE",
                   help="recipe (or template fragment) the run was trained with; "
                        "default: the recipe saved in RUN")
    p.add_argument("--mode", choices=MODES,
                   help="auto (default): alpha_umi when planner, caller and summarizer exports exist, else single")
    p.add_argument("--model", action="append", metavar="ROLE=PATH",
                   help="export to use for a role (planner, caller, summarizer, backbone or all)")
    p.add_argument("--max-new-tokens", type=int,
                   help="generation length of every role (default: each role's longest "
                        "training target, from the stage's DONE.json)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--max-prompt-tokens", type=int,
                   help="cut longer prompts (history from the left, header kept); default: the "
                        "recipe's data.max_length or the model's positions, less --max-new-tokens")


def add_decoding_args(p) -> None:
    p.add_argument("--batch-size", type=int, help="prompts per generate() batch")
    p.add_argument("--do-sample", action="store_true", default=None,
                   help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)


def add_endpoint_args(p) -> None:
    p.add_argument("--endpoint", action="append", metavar="ROLE=BASE_URL",
                   help="serve a role from an OpenAI-compatible server (its /completions) instead "
                        "of a local export; ROLE is planner, caller, summarizer, backbone or all")
    p.add_argument("--endpoint-model", action="append", metavar="ROLE=NAME",
                   help="served model name of an endpoint role (default: the role name)")
    p.add_argument("--api-key-env", help="environment variable holding the endpoints' API key "
                                         f"(default: {ENDPOINT_DEFAULTS.relative_to(RECIPES_ROOT.parent)})")
    p.add_argument("--eos-text", help="EOS text in endpoint prompts (default: the export's tokenizer's)")


def evaluate_node(args, **extra) -> dict:
    """The `evaluate:` keys the flags give (flags left out are left out: the schema fills them)."""
    given = {"mode": args.mode, "max_new_tokens": args.max_new_tokens, "device": args.device,
             "dtype": args.dtype, "max_prompt_tokens": args.max_prompt_tokens,
             "models": role_map(args.model, "--model") or None,
             **{k: getattr(args, k, None) for k in ("batch_size", "do_sample", "temperature", "top_p", "seed")},
             **extra}
    return {k: v for k, v in given.items() if v is not None}


def endpoints_from_args(args, base: Mapping | None = None) -> dict[str, dict]:
    """{role: LLM client settings} of the --endpoint roles: recipes/eval/endpoint.yaml, then
    `base` (an episodes config's `endpoint:` node), then the flags."""
    defaults = OmegaConf.to_container(OmegaConf.load(ENDPOINT_DEFAULTS), resolve=True)["endpoint"]
    llm = {**defaults, **dict(base or {})}
    if args.api_key_env:
        llm["api_key_env"] = args.api_key_env
    endpoints = {r: {**llm, "base_url": url, "model": r} for r, url in role_map(args.endpoint, "--endpoint").items()}
    for r, name in role_map(args.endpoint_model, "--endpoint-model").items():
        if r in endpoints:
            endpoints[r]["model"] = name
    return endpoints


def role_map(items, what: str) -> dict:
    """ROLE=VALUE pairs from the command line; ROLE 'all' sets every role."""
    out = {}
    for item in items or []:
        role, sep, value = item.partition("=")
        if not sep or not value:
            raise EvaluationError(f"{what} {item!r}: expected ROLE=VALUE")
        for r in (TRAINED_ROLES if role == "all" else (role,)):
            if r not in TRAINED_ROLES:
                raise EvaluationError(f"{what} {item!r}: unknown role {r!r} "
                                      f"(expected one of {', '.join(TRAINED_ROLES)} or all)")
            out[r] = value
    return out
