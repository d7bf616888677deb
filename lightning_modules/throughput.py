"""Training throughput and MFU, logged every `log_every_n_steps` optimizer steps.

Per device (averaged over ranks) over the steps since the last log:
    perf/tokens_per_sec_per_device             every position of the batch tensors, padding included
    perf/nonpad_tokens_per_sec_per_device      tokens of real examples
    perf/supervised_tokens_per_sec_per_device  positions with a target (shifted label != IGNORE_INDEX)
    perf/pad_fraction                          1 - nonpad / total
    perf/tflops_per_device                     achieved model FLOP/s (below), in TFLOP/s
    perf/mfu                                   achieved / peak FLOP/s; only when a peak is known

Model FLOPs of a step (the PaLM convention: forward + backward, no recomputation, non-pad tokens):
    6 * N * nonpad_tokens + 12 * n_layers * d_model * sum_i len_i^2
N counts every parameter that is a matmul weight, i.e. all but the input embedding (the output
head counts for every token, as in a dense forward, even when the sparse loss skips it). The
attention term sums over examples, not rows: a packed row of examples of lengths l_i only attends
within each example, so it costs sum l_i^2, not (sum l_i)^2; a padded row costs its real length^2.

Rates, MFU and the peak come from Lightning (`lightning.fabric.utilities.throughput`): a
`Throughput` per token count over the window since the last log, and `get_available_flops` for the
device's peak at the trainer's precision (its table of GPUs; none on CPU, so no MFU there) unless
the `peak_flops` knob (recipe `telemetry.peak_flops`, per device) is set. What Lightning cannot
count is added here: the token counts of packed rows and the attention FLOPs of packed examples
(sum of len^2, not row^2), so FLOPs are passed to it per logging window.
"""
from __future__ import annotations

import time
from typing import Mapping

import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch.callbacks import Callback

from core.vocabulary import IGNORE_INDEX

# Lightning precision strings -> the dtype whose matmul peak applies
_PRECISION_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "32": torch.float32,
                     "64": torch.float64, "transformer-engine": torch.bfloat16}


def precision_dtype(precision) -> torch.dtype:
    precision = str(precision)
    for prefix, dtype in _PRECISION_DTYPES.items():
        if precision.startswith(prefix):
            return dtype
    return torch.float32


# GPUs whose reported name Lightning's table does not match (it knows "H200 SXM1"/"NVL1" only):
# dense bf16/fp16 peak, per device.
_NOT_IN_LIGHTNING = {"h200": 989e12}


def available_flops(device: torch.device, precision) -> float | None:
    """Peak dense FLOP/s of the device at a Lightning precision string (Lightning's table), or
    None when it is not known (CPU, an unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    dtype = precision_dtype(precision)
    for chip, peak in _NOT_IN_LIGHTNING.items():
        if chip in name and dtype in (torch.bfloat16, torch.float16):
            return peak
    return get_available_flops(device, dtype)


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
    out = {"total": 0, "nonpad": 0, "supervised": 0, "sum_sq_lens": 0, "examples": 0}
    for b in batches:
        out["examples"] += b.get("num_examples", b["input_ids"].shape[0])
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
            out["supervised"] = out["supervised"] + (b["labels"][..., 1:] != IGNORE_INDEX).sum()
    return out


class ThroughputCallback(Callback):
    """Logs the `perf/*` metrics above every `log_every_n_steps` optimizer steps (default: the
    trainer's) to every logger; `last_metrics` keeps the latest values."""

    KEYS = ("total", "nonpad", "supervised", "sum_sq_lens", "examples")

    def __init__(self, log_every_n_steps: int | None = None, peak_flops: float | None = None):
        super().__init__()
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be at least 1, got {log_every_n_steps}")
        self.log_every_n_steps, self.peak_flops_knob = log_every_n_steps, peak_flops
        self.peak_flops: float | None = peak_flops
        self.n_params, self.n_layers, self.d_model = 0, None, None
        self.last_metrics: dict[str, float] = {}
        self._t0, self._paused, self._train_time = None, None, 0.0
        self._steps, self._logged_steps = 0, 0
        self._acc = {k: 0 for k in self.KEYS}
        self._cum = {k: 0.0 for k in self.KEYS}
        self._meter: Throughput | None = None

    def setup(self, trainer, pl_module, stage):
        if self.peak_flops_knob is None:
            self.peak_flops = available_flops(pl_module.device, trainer.precision)
        # Lightning's meter over non-pad tokens and FLOPs; a window of 2 updates = the steps since
        # the last log (counts are already averaged over devices, so world_size=1: per device).
        self._meter = Throughput(available_flops=self.peak_flops, window_size=2)

    def on_train_start(self, trainer, pl_module):
        model = getattr(pl_module, "model", None) or pl_module
        self.n_params = matmul_params(model)
        if trainer.world_size > 1 and _fsdp1_sharded(trainer, model):
            # FSDP1 (use_orig_params): each rank's parameters are views of its shard only.
            local = torch.tensor(float(self.n_params), device=pl_module.device)
            self.n_params = int(trainer.strategy.reduce(local, reduce_op="sum"))
        self.n_layers, self.d_model = model_shape(model)

    # ----- timing ------------------------------------------------------------------------------
    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = self._now(pl_module)
            self._update(0.0, 0.0)  # the window's start

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
        if self._steps - self._logged_steps < every:
            return
        metrics = self.compute(trainer, pl_module, self._now(pl_module) - self._t0)
        self.last_metrics = metrics
        step = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped",
                       trainer.global_step)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    # ----- metrics -----------------------------------------------------------------------------
    def _update(self, seconds: float, flops: float | None = None):
        self._meter.update(time=seconds, batches=self._steps, samples=self._steps,
                           lengths=self._steps + round(self._cum["nonpad"]), flops=flops)

    def compute(self, trainer, pl_module, seconds: float) -> dict[str, float]:
        """Metrics of the window since the last log; `seconds`: training time since the start."""
        acc = torch.tensor([float(self._acc[k]) for k in self.KEYS], dtype=torch.float64,
                           device=pl_module.device)
        world = max(1, trainer.world_size)
        if world > 1:
            acc = trainer.strategy.reduce(acc, reduce_op="sum")
        window = dict(zip(self.KEYS, (acc / world).tolist()))  # per device
        for k in self.KEYS:
            self._cum[k] += window[k]
        self._acc = {k: 0 for k in self.KEYS}
        self._logged_steps = self._steps
        seconds = max(seconds, self._train_time + 1e-9)
        self._train_time = seconds
        flops = step_flops(self.n_params, window["nonpad"], window["sum_sq_lens"], self.n_layers,
                           self.d_model)
        self._update(seconds, flops)
        rates = self._meter.compute()
        # Lightning's items/s counts non-pad tokens (+1 per step, so that the count always grows);
        # the other counts are rates over the same window.
        steps_per_sec = rates["device/batches_per_sec"]
        nonpad = rates["device/items_per_sec"] - steps_per_sec
        per_token = nonpad / window["nonpad"] if window["nonpad"] else 0.0
        metrics = {
            "perf/tokens_per_sec_per_device": window["total"] * per_token,
            "perf/nonpad_tokens_per_sec_per_device": nonpad,
            "perf/supervised_tokens_per_sec_per_device": window["supervised"] * per_token,
            "perf/examples_per_sec_per_device": window["examples"] * per_token,
            "perf/pad_fraction": 1.0 - window["nonpad"] / window["total"] if window["total"] else 0.0,
            "perf/tflops_per_device": rates["device/flops_per_sec"] / 1e12,
        }
        if "device/mfu" in rates:
            metrics["perf/mfu"] = rates["device/mfu"]
        return metrics


def build_throughput_callback(telemetry: Mapping | None) -> ThroughputCallback:
    """From the recipe's optional `telemetry: {peak_flops, log_every_n_steps}` node."""
    cfg = dict(telemetry or {})
    peak = cfg.get("peak_flops")
    return ThroughputCallback(log_every_n_steps=cfg.get("log_every_n_steps"),
                              peak_flops=float(peak) if peak else None)
