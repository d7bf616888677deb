"""Where the code builds a recipe's nodes, and the check of each node against its callable.

A node with `_target_` is built by calling that callable with the node's other keys. The code that
builds it may pass more arguments (the stage's role, the tokenizer, the optimizer's parameters, ...)
and may take some keys out first. Each such place is declared here once, as a `BuildSite`, and the
builder goes through `BuildSite.build`, which refuses any other set of arguments: the check of a
recipe (`core.validation.check_nodes`, run by `core.recipe.validate` before anything is built) and
the build cannot drift apart. `BuildSite.defaults` reads the signature defaults a stage's settings
are completed with (core/stage_config.py). The layers above core import these sites; core knows
nothing of them but their names.
"""
from __future__ import annotations

import copy
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .instantiate import instantiate, locate

_NONE = type(None)


@dataclass(frozen=True)
class BuildSite:
    section: str                     # the recipe section; `stages.<name>.<section>` overrides it
    builder: str                     # the function that builds it (named in error messages)
    injected: tuple[str, ...] = ()   # keyword arguments the builder passes (not the recipe's)
    positional: int = 0              # leading positional arguments the builder passes
    consumed: tuple[str, ...] = ()   # recipe keys the builder uses itself and does not pass on
    default_target: str | None = None  # the callable of a node that has no `_target_`
    per_stage: bool = True           # stages may override the section

    def build(self, node: Mapping, *args, **injected) -> Any:
        if len(args) != self.positional or set(injected) != set(self.injected):
            raise TypeError(f"{self.builder} must pass {self.positional} positional argument(s) and "
                            f"{sorted(self.injected)} to '{self.section}' (as declared in core/build_sites.py), "
                            f"not {len(args)} and {sorted(injected)}")
        kwargs = {k: v for k, v in node.items() if k not in self.consumed}
        if self.default_target:
            kwargs.setdefault("_target_", self.default_target)
        return instantiate(kwargs, *args, **injected)

    def defaults(self, node: Mapping) -> dict:
        """The signature defaults of what builds `node` (its `_target_`), for the keys the recipe
        sets: neither the builder's own arguments nor the keys it consumes."""
        target = node.get("_target_") or self.default_target
        try:
            _, sig, _ = _signature(str(target))
        except Exception:  # no target, or one that does not import: the recipe check says so
            return {}
        return {name: copy.deepcopy(p.default) for name, p in _keyword_params(sig, self.positional).items()
                if p.default is not p.empty and name not in self.injected and name not in self.consumed}


# The batch keys make up the stage's BatchPlan (core/batch_plan.py), which the DataModule gets.
DATA = BuildSite("data", "pipeline.stage_setup.build_datamodule",
                 injected=("role", "template", "tokenizer", "batch_plan", "add_bos"),
                 consumed=("micro_batch_size", "global_batch_size", "simulator_dir"))
MODEL = BuildSite("model", "lightning_modules.span_lm_module.SpanLMModule.configure_model",
                  injected=("vocab_size", "special_token_ids"))
OPTIMIZER = BuildSite("optimizer", "lightning_modules.span_lm_module.SpanLMModule.configure_optimizers",
                      positional=1, consumed=("weight_decay",))  # param groups carry the weight decay
SCHEDULER = BuildSite("scheduler", "lightning_modules.span_lm_module.SpanLMModule.configure_optimizers",
                      positional=1, injected=("total_steps",))
# The module accumulates and clips itself (manual optimization), so the trainer gets neither.
TRAINER = BuildSite("trainer", "pipeline.stage_runner.build_trainer",
                    injected=("strategy", "logger", "callbacks", "plugins", "use_distributed_sampler",
                              "accumulate_grad_batches", "enable_progress_bar", "default_root_dir"),
                    consumed=("accumulate_grad_batches", "gradient_clip_val"),
                    default_target="lightning.pytorch.Trainer")
STRATEGY = BuildSite("strategy", "pipeline.stage_runner.build_trainer", per_stage=False)
# The embedded default's tokenizer, trained on the corpus texts into the run directory.
TOKENIZER = BuildSite("tokenizer.train_bpe", "pipeline.stage_setup.load_tokenizer", positional=1,
                      injected=("out_dir",), default_target="prompting.bpe_tokenizer.train_bpe_tokenizer",
                      per_stage=False)
SITES = (DATA, MODEL, OPTIMIZER, SCHEDULER, TRAINER, STRATEGY, TOKENIZER)


@functools.lru_cache(maxsize=None)
def _signature(target: str) -> tuple[Callable, inspect.Signature, dict]:
    fn = locate(target)
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # annotations that do not resolve say nothing we can check
        hints = {}
    return fn, sig, hints


def _keyword_params(sig: inspect.Signature, positional: int) -> dict[str, inspect.Parameter]:
    """Parameters a recipe key can set: all but the leading `positional` ones and *args/**kwargs."""
    params = list(sig.parameters.values())
    while positional and params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params, positional = params[1:], positional - 1
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _choices(hint) -> tuple | None:
    """The allowed values of a `Literal[...]` annotation (inside Optional/Union), else None."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        out = []
        for arg in typing.get_args(hint):
            if arg is _NONE:
                out.append(None)
            elif typing.get_origin(arg) is typing.Literal:
                out.extend(typing.get_args(arg))
            else:
                return None
        return tuple(out)
    return None


def check_node(node: Mapping, site: BuildSite | None, where: Callable[[str], str],
               origin: Callable[[str], str], stage: str | None = None) -> list[str]:
    """Problems of one node against its callable's signature. `where(key)` is the key path a key
    was set at, `origin(path)` the file it came from; `stage` names a stage with its own callable."""
    site = site or BuildSite("", "instantiate")
    target = node.get("_target_") or site.default_target
    name = site.section or "node"
    if not target:
        return [f"missing required key '{where('_target_')}' (in {origin(where('_target_'))}): "
                f"the {name} is built from it"]
    try:
        fn, sig, hints = _signature(str(target))
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return []
    except Exception as exc:  # ImportError, or an error raised while importing the module
        return [f"key '{where('_target_')}': {exc} (from {origin(where('_target_'))})"]
    callee = getattr(fn, "__qualname__", str(target)) + (f" (stage {stage})" if stage else "")
    open_ended = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    named = _keyword_params(sig, site.positional)
    problems = []
    for key, value in node.items():
        if key == "_target_" or key in site.consumed:
            continue
        path = where(key)
        if key in site.injected:
            problems.append(f"key '{path}' (from {origin(path)}): {site.builder} passes it to {callee} "
                            "itself; remove it from the recipe")
        elif key not in named and not open_ended:
            problems.append(f"unknown key '{path}' (from {origin(path)}): {callee} takes no such argument")
        elif key in named and key in hints:
            choices = _choices(hints[key])
            if choices is not None and value not in choices:
                problems.append(f"key '{path}': {value!r} is not one of {list(choices)} "
                                f"(from {origin(path)})")
    for p in named.values():
        if p.default is p.empty and p.name not in node and p.name not in site.injected:
            path = where(p.name)
            problems.append(f"missing required key '{path}' (in {origin(path)}): {callee} needs it")
    return problems
