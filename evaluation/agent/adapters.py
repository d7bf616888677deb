"""A team whose members are adapters of one base: the base is loaded once, each adapter is loaded
into it by name (peft `load_adapter`), and a member switches to its own (`set_adapter`) before it
generates, under one lock per base, so a team of three adapters costs one model's memory."""
from __future__ import annotations

import threading
from pathlib import Path

from .members import LocalMember


def is_adapter(path) -> bool:
    return path is not None and (Path(path) / "adapter_config.json").is_file()


def adapter_base(path) -> str:
    """The base model an adapter folder names (its adapter_config.json)."""
    from peft import PeftConfig
    return PeftConfig.from_pretrained(str(path)).base_model_name_or_path


class SharedBase:
    """One base model with named adapters, loaded on first use."""

    def __init__(self, base: str, device: str | None = None, dtype: str | None = None):
        self.base, self.device, self.dtype = base, device, dtype
        self.adapters: dict[str, str] = {}  # adapter name -> folder
        self.model = self.tokenizer = None
        self.lock = threading.Lock()  # one generate() at a time on this model, whichever adapter

    def add(self, name: str, path: str) -> None:
        if self.model is not None:
            self.model.load_adapter(str(path), adapter_name=name)
        self.adapters[name] = str(path)

    def load(self):
        if self.model is None:
            from peft import PeftModel
            from transformers import AutoTokenizer

            from .generation import load_model, prepare_tokenizer
            base, _ = load_model(self.base, self.device, self.dtype)
            (first, path), *rest = self.adapters.items()
            model = PeftModel.from_pretrained(base, path, adapter_name=first)
            for name, other in rest:
                model.load_adapter(other, adapter_name=name)
            self.model = model.eval()
            self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))  # as the adapter was trained
        return self.model, self.tokenizer


class AdapterMember(LocalMember):
    """A LocalMember whose model is its adapter on a SharedBase."""

    def __init__(self, path: str, shared: SharedBase, *, role: str, **kwargs):
        super().__init__(path, role=role, **kwargs)
        self.shared, self.adapter = shared, role
        shared.add(role, path)

    def load(self):
        self.model, self.tokenizer = self.shared.load()
        return self

    def release(self) -> None:
        """The base stays loaded for the other members; this member only lets go of it."""
        self.model = self.tokenizer = None

    def complete(self, prompts, n_header: int = 1):
        with self.shared.lock:
            self.load()
            self.model.set_adapter(self.adapter)
            return super().complete(prompts, n_header)


def adapter_members(exports: dict, roles, member_kwargs: dict) -> dict:
    """{role: AdapterMember} for the roles whose export is an adapter folder, one SharedBase per
    base model."""
    bases: dict[str, SharedBase] = {}
    out = {}
    for role in roles:
        path = exports.get(role)
        if is_adapter(path):
            base = adapter_base(path)
            shared = bases.setdefault(base, SharedBase(base, member_kwargs.get("device"), member_kwargs.get("dtype")))
            out[role] = AdapterMember(path, shared, role=role, **member_kwargs)
    return out
