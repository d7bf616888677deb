"""Training throughput and MFU, logged every `log_every_n_steps` optimizer steps.

Per device (averaged over ranks) over the steps since the last log:
    perf/tokens_per_sec_per_device             every position of the batch tensors, padding included
    perf/nonpad_tokens_per_sec_per_device      tokens of real examples
    perf/supervised_tokens_per_sec_per_device  positions with a target (shifted label != -100)
    perf/pad_fraction                          1 - nonpad / total
    perf/tflops_per_device                     achieved model FLOP/s (below), in TFLOP/s
    perf/mfu                                   achieved / peak FLOP/s; only when a peak is known

Model FLOPs of a step (the PaLM convention: forward + backward, no recomputation, non-pad tokens):
    6 * N * nonpad_tokens + 12 * n_layers * d_model * sum_i len_i^2
N counts every parameter that is a matmul weight, i.e. all but the input embedding (the output
head counts for every token, as in a dense forward, even when the sparse loss skips it). The
attention term sums over examples, not rows: a packed row of examples of lengths l_i only attends
within each example, so it costs sum l_i^2, not (sum l_i)^2; a padded row costs its real length^2.

Peak FLOP/s: the `peak_flops` knob (per device, recipe `telemetry.peak_flops`), else a small table
of dense tensor-core peaks for known GPUs at the trainer's precision; none on CPU (no MFU logged).
"""
from __future__ import annotations

import time
from typing import Mapping

import torch
from lightning.pytorch.callbacks import Callback

# Dense (no sparsity) peak FLOP/s per device by matmul precision. Matched in order against
# torch.cuda.get_device_name(), so more specific names come first.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12}),
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12}),
    ("GH200", {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12}),
    ("H200", {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12}),  # SXM
    ("B200", {"bf16": 2250e12, "fp16": 2250e12, "tf32": 1100e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12}),
    ("A800", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12}),
    ("L40S", {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12}),
    ("L4", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12}),
    ("A10", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12}),
    ("V100", {"fp16": 125e12}),
]


def matmul_precision(precision) -> str | None:
    """'bf16', 'fp16' or 'tf32' for a Lightning precision string; None for true fp32/fp64."""
    precision = str(precision)
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if precision.startswith("32") and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return None


def lookup_peak_flops(device_name: str, precision) -> float | None:
    """Peak dense FLOP/s of a known GPU at a Lightning precision string, else None."""
    kind = matmul_precision(precision)
    for name, peaks in PEAK_FLOPS:
        if name.lower() in device_name.lower():
            return peaks.get(kind) if kind else None
    return None


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (counted once
    if it is tied to the output head). DeepSpeed ZeRO-3 shards report their full size (ds_numel),
    DTensors (FSDP2) their global size; FSDP1 shards are summed over ranks by the callback."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += getattr(p, "ds_numel", p.numel())
    get_in, get_out = (getattr(model, n, None) for n in ("get_input_embeddings", "get_output_embeddings"))
    emb = get_in() if callable(get_in) else None
    head = get_out() if callable(get_out) else None
    if emb is not None and not (head is not None and head.weight is emb.weight):
        total -= getattr(emb.weight, "ds_numel", emb.weight.numel())
    return total


def _fsdp1_sharded(trainer, model) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:
        return False
    wrapped = getattr(trainer.strategy, "model", None)
    return isinstance(wrapped, FSDP) or any(isinstance(m, FSDP) for m in model.modules())


def model_shape(model: torch.nn.Module) -> tuple[int | None, int | None]:
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return getattr(cfg, "num_hidden_layers", None), getattr(cfg, "hidden_size", None)


def step_flops(n_params: int, nonpad_tokens, sum_sq_lens, n_layers: int | None,
               d_model: int | None):
    """Model FLOPs (forward + backward) of `nonpad_tokens` tokens whose examples have
    `sum_sq_lens` = sum of squared lengths."""
    flops = 6 * n_params * nonpad_tokens
    if n_layers and d_model:
        flops = flops + 12 * n_layers * d_model * sum_sq_lens
    return flops


def batch_token_counts(batch) -> dict:
    """Token counts of one step's batch (a micro-batch dict or a list of them).

    Values are python ints or 0-d tensors on the batch's device (no device sync here).
    Padded batches: examples are the rows, of length attention_mask.sum(1). Packed batches:
    `example_lens` (from PackedStepCollator), else `seq_lens` (then a padding tail counts as an
    example). Otherwise every row is one example as long as the row.
    """
    batches = batch if isinstance(batch, (list, tuple)) else [batch]
    out = {"total": 0, "nonpad": 0, "supervised": 0, "sum_sq_lens": 0}
    for b in batches:
        ids = b["input_ids"]
        out["total"] += ids.numel()
        if "attention_mask" in b and b["attention_mask"].dim() == 2:
            lens = b["attention_mask"].sum(1)
            out["nonpad"] = out["nonpad"] + lens.sum()
            out["sum_sq_lens"] = out["sum_sq_lens"] + (lens.long() ** 2).sum()
        else:
            rows = b.get("example_lens") or b.get("seq_lens") or [[ids.shape[-1]]] * ids.shape[0]
            out["nonpad"] += sum(n for row in rows for n in row)
            out["sum_sq_lens"] += sum(n * n for row in rows for n in row)
        if "labels" in b:
            out["supervised"] = out["supervised"] + (b["labels"][..., 1:] != -100).sum()
    return out


class ThroughputCallback(Callback):
    """Logs the `perf/*` metrics above every `log_every_n_steps` optimizer steps (default: the
    trainer's) to every logger; `last_metrics` keeps the latest values."""

    KEYS = ("total", "nonpad", "supervised", "sum_sq_lens")

    def __init__(self, log_every_n_steps: int | None = None, peak_flops: float | None = None):
        super().__init__()
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be at least 1, got {log_every_n_steps}")
        self.log_every_n_steps, self.peak_flops_knob = log_every_n_steps, peak_flops
        self.peak_flops: float | None = peak_flops
        self.n_params, self.n_layers, self.d_model = 0, None, None
        self.last_metrics: dict[str, float] = {}
        self._reset(None)

    # ----- state -------------------------------------------------------------------------------
    def _reset(self, t0):
        self._t0, self._paused, self._steps = t0, None, 0
        self._acc = {k: 0 for k in self.KEYS}

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def setup(self, trainer, pl_module, stage):
        if self.peak_flops_knob is None and pl_module.device.type == "cuda":
            self.peak_flops = lookup_peak_flops(torch.cuda.get_device_name(pl_module.device),
                                                trainer.precision)

    def on_train_start(self, trainer, pl_module):
        model = getattr(pl_module, "model", None) or pl_module
        self.n_params = matmul_params(model)
        if trainer.world_size > 1 and _fsdp1_sharded(trainer, model):
            # FSDP1 (use_orig_params): each rank's parameters are views of its shard only.
            local = torch.tensor(float(self.n_params), device=pl_module.device)
            self.n_params = int(trainer.strategy.reduce(local, reduce_op="sum"))
        self.n_layers, self.d_model = model_shape(model)

    # ----- timing ------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = self._now(pl_module)

    def on_validation_start(self, trainer, pl_module):
        if self._t0 is not None:  # validation inside fit, between training steps
            self._paused = self._now(pl_module)

    def on_validation_end(self, trainer, pl_module):
        if self._paused is not None:  # validation time is not training time
            self._t0 += self._now(pl_module) - self._paused
            self._paused = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        counts = batch_token_counts(batch)
        for k in self.KEYS:
            self._acc[k] = self._acc[k] + counts[k]
        self._steps += 1
        every = self.log_every_n_steps or trainer.log_every_n_steps or 1
        if self._steps < every:
            return
        now = self._now(pl_module)
        metrics = self.compute(trainer, pl_module, now - self._t0)
        self.last_metrics = metrics
        step = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped",
                       trainer.global_step)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        self._reset(now)

    # ----- metrics -----------------------------------------------------------------------------
    def compute(self, trainer, pl_module, seconds: float) -> dict[str, float]:
        acc = torch.tensor([float(self._acc[k]) for k in self.KEYS], dtype=torch.float64,
                           device=pl_module.device)
        world = max(1, trainer.world_size)
        if world > 1:
            acc = trainer.strategy.reduce(acc, reduce_op="sum")
        total, nonpad, supervised, sum_sq = (acc / world).tolist()  # per device
        seconds = max(seconds, 1e-9)
        flops = step_flops(self.n_params, nonpad, sum_sq, self.n_layers, self.d_model)
        metrics = {
            "perf/tokens_per_sec_per_device": total / seconds,
            "perf/nonpad_tokens_per_sec_per_device": nonpad / seconds,
            "perf/supervised_tokens_per_sec_per_device": supervised / seconds,
            "perf/pad_fraction": 1.0 - nonpad / total if total else 0.0,
            "perf/tflops_per_device": flops / seconds / 1e12,
        }
        if self.peak_flops:
            metrics["perf/mfu"] = flops / seconds / self.peak_flops
        return metrics


def build_throughput_callback(telemetry: Mapping | None) -> ThroughputCallback:
    """From the recipe's optional `telemetry: {peak_flops, log_every_n_steps}` node."""
    cfg = dict(telemetry or {})
    peak = cfg.get("peak_flops")
    return ThroughputCallback(log_every_n_steps=cfg.get("log_every_n_steps"),
                              peak_flops=float(peak) if peak else None)
