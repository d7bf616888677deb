"""An OpenAPI spec from a short API description: description -> function list -> spec, validated
and regenerated (with the validation errors fed back) up to `spec_generation.max_attempts` times.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .agents import ask
from core.llm_client import LLMClient
from .openapi_toolset import SpecError, Toolset, toolset_from_spec
from .prompts import ParseError, extract_json, render


async def generate_spec(llm: LLMClient, settings, name: str, description: str,
                        counters: Counter | None = None) -> dict:
    counters = Counter() if counters is None else counters
    cfg, prompts = settings["spec_generation"], settings["prompts"]
    attempts = int(cfg["max_attempts"])
    first = render(prompts["spec_functions"], api_name=name, description=description,
                   max_functions=cfg["max_functions"])
    functions = None
    for _ in range(attempts):
        try:
            functions = extract_json(await ask(llm, [{"role": "user", "content": first}], counters, cfg))
            if isinstance(functions, list) and functions:
                break
        except ParseError:
            pass
        counters["spec_function_list_failures"] += 1
    if not functions:
        raise SpecError(f"generated spec for {name!r}", [("$", "the LLM wrote no function list")])
    messages = [{"role": "user", "content": render(
        prompts["spec_openapi"], api_name=name, description=description,
        functions=json.dumps(functions, ensure_ascii=False, indent=1))}]
    problems: list[tuple[str, str]] = []
    for _ in range(attempts):
        text = await ask(llm, messages, counters, cfg)
        try:
            spec = extract_json(text)
            toolset_from_spec(spec, name=name, source=f"generated spec for {name!r}")
            return spec
        except ParseError as exc:
            problems = [("$", str(exc))]
        except SpecError as exc:
            problems = exc.problems
        counters["spec_regenerations"] += 1
        errors = "\n".join(f"{p}: {m}" for p, m in problems)
        messages += [{"role": "assistant", "content": text},
                     {"role": "user", "content": render(prompts["spec_fix"], errors=errors)}]
    raise SpecError(f"generated spec for {name!r} (after {attempts} attempts)", problems)


async def toolset_from_description(llm: LLMClient, settings, name: str, description: str,
                                   cache_dir: Path, counters: Counter | None = None) -> Toolset:
    """The generated spec is cached (keyed by the API name) so a resumed run sees the same API."""
    cache = Path(cache_dir) / (("".join(c if c.isalnum() else "_" for c in name)) + ".json")
    if cache.exists():
        spec = json.loads(cache.read_text(encoding="utf-8"))
    else:
        spec = await generate_spec(llm, settings, name, description, counters)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(cache)
    return toolset_from_spec(spec, name=name, source=str(cache), description=description)
