"""The one LightningModule of every stage: a causal LM trained on span-masked targets.

The loss of an optimizer step is the sum of the token losses over supervised tokens divided by the
number of supervised tokens in the whole step (all micro-batches of the accumulation window, all
devices), not a mean of per-micro-batch means. To know that number before the first backward, the
DataModule hands each training step the list of its micro-batches, and the module accumulates them
itself (manual optimization).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import lightning as L
import torch

from core.build_sites import MODEL, OPTIMIZER, SCHEDULER
from core.vocabulary import IGNORE_INDEX, SPAN_KINDS
from .causal_lm import import_model_classes, register_zero_micro_step_hook, sharded_build_context
from .span_loss import (SpanLossSums, dense_token_losses, forward_hidden,
                        reduce_span_losses, shift_labels, span_loss_sums)


@dataclass
class KindTotals:
    """Token losses and supervised-token counts summed per span kind (SPAN_KINDS), over micro-batches."""
    sums: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def zeros(cls, device) -> KindTotals:
        return cls(torch.zeros(len(SPAN_KINDS), device=device), torch.zeros(len(SPAN_KINDS), device=device))

    def add(self, sums: SpanLossSums) -> None:
        self.sums += sums.kind_sums.detach()
        self.counts += sums.kind_counts

    def reduced(self, strategy) -> KindTotals:
        """Summed over devices."""
        return KindTotals(strategy.reduce(self.sums, reduce_op="sum"), strategy.reduce(self.counts, reduce_op="sum"))

    def per_kind(self, prefix: str) -> dict:
        """`{prefix}loss_<kind>`: each kind's mean token loss (kinds with supervised tokens)."""
        return {f"{prefix}loss_{name}": self.sums[i] / self.counts[i]
                for i, name in enumerate(SPAN_KINDS[1:], 1) if self.counts[i] > 0}


class SpanLMModule(L.LightningModule):
    def __init__(self, model: Mapping, optimizer: Mapping, scheduler: Mapping, loss: Mapping,
                 gradient_clip_val: float | None, vocab_size: int | None = None,
                 special_token_ids: Mapping | None = None):
        """The stage's completed settings (core.stage_config.stage_settings): `loss` and
        `gradient_clip_val` (trainer.gradient_clip_val) as the recipe schema completes them."""
        super().__init__()
        self.automatic_optimization = False
        self.model_cfg = dict(model)
        self.optimizer_cfg, self.scheduler_cfg = dict(optimizer), dict(scheduler)
        self.sparse, self.chunk_size = loss["sparse"], loss["chunk_size"]
        self.recompute = loss["recompute_chunks"]
        self.gradient_clip_val = gradient_clip_val
        self.vocab_size = vocab_size
        self.special_token_ids = dict(special_token_ids or {})
        self.model = None
        self._val = None

    # ----- model ---------------------------------------------------------------------------
    def setup(self, stage: str):
        if self.model is None:  # before configure_model, which ZeRO-3 runs inside zero.Init
            import_model_classes(**self.model_cfg)

    def configure_model(self):
        # Lightning may call this more than once (e.g. fit after validate); build only once.
        if self.model is None:
            # ZeRO-3: inside deepspeed.zero.Init; transformers must know so weights really load.
            strategy = self._trainer.strategy if self._trainer is not None else None
            with sharded_build_context(strategy):
                self.model = MODEL.build(self.model_cfg, vocab_size=self.vocab_size,
                                         special_token_ids=self.special_token_ids)
            register_zero_micro_step_hook(self.model, strategy)  # DeepSpeed: a micro-step per micro-batch
            self.model.train()  # from_pretrained returns eval mode

    def span_sums(self, batch) -> SpanLossSums:
        if self.sparse:
            return span_loss_sums(self.model, batch, self.chunk_size, self.recompute)
        labels, kinds = shift_labels(batch["labels"], batch["span_kinds"])
        hidden = forward_hidden(self.model, batch)
        losses = dense_token_losses(self.model.get_output_embeddings()(hidden), labels)
        return reduce_span_losses(losses, kinds, len(SPAN_KINDS), mask=labels != IGNORE_INDEX)

    # ----- training --------------------------------------------------------------------------
    def on_fit_start(self):
        self._seed = torch.initial_seed()  # the run's seed (seed_everything ran before fit)

    def training_step(self, micro_batches, batch_idx):
        micro_batches = micro_batches if isinstance(micro_batches, list) else [micro_batches]
        # Dropout (LoRA's lora_dropout) draws from the global RNG, which no checkpoint holds: seeded
        # per step and rank, a resumed stage draws what an uninterrupted one would have.
        torch.manual_seed(self._seed + 1_000_003 * self.global_step + self.global_rank)
        opt, sched = self.optimizers(), self.lr_schedulers()
        strategy = self.trainer.strategy
        local = sum((b["labels"][:, 1:] != IGNORE_INDEX).sum() for b in micro_batches).float()
        n_step = strategy.reduce(local.clone(), reduce_op="sum")
        # Gradients are averaged over devices by DDP/FSDP/DeepSpeed, so scale by the world size.
        scale = self.trainer.world_size / n_step.clamp(min=1)
        totals = KindTotals.zeros(self.device)
        for i, batch in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1
            with _no_backward_sync(strategy, skip=not sync):
                sums = self.span_sums(batch)
                self.manual_backward(sums.loss_sum * scale)
            totals.add(sums)
        grad_norm = self._clip(opt)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        self._log_step(micro_batches, totals, grad_norm, n_step)

    def _clip(self, opt):
        if not self.gradient_clip_val:
            return None
        strategy = self.trainer.strategy
        engine = getattr(strategy, "deepspeed_engine", None)
        if engine is not None:
            # DeepSpeed clips inside its engine (gradient_clipping in its config); the norm of
            # this step is known only after its step, so the logged norm is the previous step's.
            norm = engine.get_global_grad_norm()
            return torch.tensor(float(norm)) if norm is not None else None
        wrapped = getattr(strategy, "model", None)
        if hasattr(wrapped, "clip_grad_norm_"):  # FSDP: the norm over all shards, not the local one
            return wrapped.clip_grad_norm_(self.gradient_clip_val)
        params = [p for p in self.model.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)

    def _log_step(self, micro_batches, totals: KindTotals, grad_norm, n_step):
        strategy = self.trainer.strategy
        totals = totals.reduced(strategy)
        examples = torch.tensor(float(sum(b.get("num_examples", len(b["input_ids"]))
                                          for b in micro_batches)), device=self.device)
        logs = {"train/loss": totals.sums.sum() / n_step.clamp(min=1),
                "train/lr": torch.tensor(self.lr_schedulers().get_last_lr()[0]),
                "train/supervised_tokens": n_step,  # per optimizer step, all devices
                "train/examples": strategy.reduce(examples, reduce_op="sum"), **totals.per_kind("train/")}
        if grad_norm is not None:
            logs["train/grad_norm"] = grad_norm
        self.log_dict({k: v.float() if torch.is_tensor(v) else v for k, v in logs.items()},
                      prog_bar=False, on_step=True, on_epoch=False, rank_zero_only=True)
        self.log("loss", logs["train/loss"], prog_bar=True, on_step=True, logger=False)

    # ----- validation ------------------------------------------------------------------------
    def on_validation_epoch_start(self):
        self._val = KindTotals.zeros(self.device)

    def validation_step(self, batch, batch_idx):
        for b in batch if isinstance(batch, list) else [batch]:
            self._val.add(self.span_sums(b))

    def on_validation_epoch_end(self):
        totals = self._val.reduced(self.trainer.strategy)
        if totals.counts.sum() == 0:
            return
        logs = {"val/loss": totals.sums.sum() / totals.counts.sum(), **totals.per_kind("val/")}
        self.log_dict(logs, prog_bar=True, rank_zero_only=True)

    # ----- optimizer -------------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                ndim = len(getattr(p, "ds_shape", p.shape))  # ZeRO-3 partitions are flat
                (no_decay if ndim < 2 or "norm" in name.lower() else decay).append(p)
        wd = self.optimizer_cfg["weight_decay"]
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        # An adapter may have no 1-D parameter; DeepSpeed drops an empty group and the scheduler,
        # built on the groups given, would then fail on its first step.
        groups = [g for g in groups if g["params"]]
        optimizer = OPTIMIZER.build(self.optimizer_cfg, groups)
        scheduler = SCHEDULER.build(self.scheduler_cfg, optimizer,
                                    total_steps=max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _no_backward_sync:
    """Skip the gradient all-reduce for all but the last micro-batch of a step (DDP only)."""

    def __init__(self, strategy, skip: bool):
        self.ctx = None
        block = getattr(strategy, "block_backward_sync", None)
        if skip and block is not None and getattr(strategy, "model", None) is not None \
                and isinstance(strategy.model, torch.nn.parallel.DistributedDataParallel):
            self.ctx = block()

    def __enter__(self):
        return self.ctx.__enter__() if self.ctx else None

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc) if self.ctx else False
