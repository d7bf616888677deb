"""LoRA vs full fine-tuning, side by side in one run: trainable parameters, optimizer-state memory,
gradient memory and supervised tokens/s of the training step, then the memory of an α-UMi team
loaded both ways (three full models vs one base with three adapters).

    python bench/lora.py                                   # CPU, a small random-init Llama
    python bench/lora.py --device cuda --model-size 1b     # GPU, bf16

Both variants: the same model config and initial weights (seeded), the same random batches
(`--rows` rows of `--seq` tokens, the loss on the second half of each row, as a role's spans),
AdamW, the repo's sparse span loss (lightning_modules/span_loss.py), one warm-up step then
`--steps` timed steps. The adapter is recipes/adapter/lora.yaml's (`--rank` overrides r).
Optimizer state and gradients are summed from the tensors themselves (exact, any device);
on CUDA the peak allocated memory of the timed steps is reported too.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=4096),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000),
}
ROLES = ("planner", "caller", "summarizer")


def lora_config(rank: int | None):
    from omegaconf import OmegaConf

    from core.instantiate import instantiate
    node = OmegaConf.to_container(OmegaConf.load(REPO / "recipes" / "adapter" / "lora.yaml"))["model"]["adapter"]
    return instantiate({**node, **({"r": rank} if rank else {})})


def build(args, adapter: bool):
    from lightning_modules.causal_lm import build_causal_lm
    torch.manual_seed(0)
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    model = build_causal_lm(config={"model_type": "llama", "max_position_embeddings": args.seq,
                                    **SIZES[args.model_size]}, dtype=dtype, attn_implementation="sdpa")
    if adapter:  # on the same weights, as a stage-2 adapter sits on the stage-1 export
        from lightning_modules.causal_lm import with_adapter
        model = with_adapter(model, lora_config(args.rank), False, False, False)
    return model.to(args.device).train()


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def batches(args, vocab: int):
    g = torch.Generator().manual_seed(1)
    for _ in range(args.steps + 1):
        ids = torch.randint(3, vocab, (args.rows, args.seq), generator=g)
        labels = ids.clone()
        labels[:, : args.seq // 2] = -100
        kinds = (labels != -100).long()
        yield {k: v.to(args.device) for k, v in dict(input_ids=ids, labels=labels, span_kinds=kinds,
                                                      attention_mask=torch.ones_like(ids)).items()}


def run(args, adapter: bool) -> dict:
    from lightning_modules.span_loss import span_loss_sums
    model = build(args, adapter)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=args.device.startswith("cuda"))
    supervised, elapsed = 0, 0.0
    for i, batch in enumerate(batches(args, SIZES[args.model_size]["vocab_size"])):
        if i == 1:  # after the warm-up step: optimizer state exists, allocator is warm
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        sums = span_loss_sums(model, batch)
        n = sums.kind_counts.sum()
        (sums.loss_sum / n).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        grads = nbytes(p.grad for p in params)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            supervised += int(n)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out = {"trainable": sum(p.numel() for p in params), "total": sum(p.numel() for p in model.parameters()),
           "optimizer_mb": nbytes(t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)) / 2**20,
           "grad_mb": grads / 2**20, "tok_s": supervised / elapsed, "s_step": elapsed / args.steps}
    if args.device.startswith("cuda"):
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del model, opt
    return out


def team_memory(args) -> dict:
    """Parameter memory of a team: three full models (merged exports) vs one base holding three
    adapters (evaluation.agent.adapters.SharedBase: load_adapter per role)."""
    import peft
    model = build(args, adapter=False).eval()
    base = nbytes(model.parameters())
    shared = peft.get_peft_model(model, lora_config(args.rank), adapter_name=ROLES[0])
    for role in ROLES[1:]:
        shared.add_adapter(role, lora_config(args.rank))
    unique = {p.data_ptr(): p for p in shared.parameters()}
    return {"three full models": 3 * base / 2**20, "one base + three adapters": nbytes(unique.values()) / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-size", choices=sorted(SIZES), default="small")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rank", type=int, help="LoRA r (default: recipes/adapter/lora.yaml's)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {"full": run(args, adapter=False), "lora": run(args, adapter=True)}
    cols = ["trainable", "total", "optimizer_mb", "grad_mb", "tok_s", "s_step"] + (["peak_mb"] if "peak_mb" in rows["full"] else [])
    print(f"model {args.model_size}, {args.rows} x {args.seq} tokens per step, {args.steps} timed steps on {args.device}\n")
    print("| variant | " + " | ".join(cols) + " |\n" + "|---" * (len(cols) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:,.0f}" if c in ("trainable", "total") else f"{r[c]:,.2f}"
                                          for c in cols) + " |")
    ratio = {c: rows["lora"][c] / rows["full"][c] for c in ("trainable", "optimizer_mb", "tok_s")}
    print(f"\nlora / full: trainable {ratio['trainable']:.4f}x, optimizer state {ratio['optimizer_mb']:.4f}x, "
          f"tokens/s {ratio['tok_s']:.2f}x")
    print("\n| team (parameters) | MB |\n|---|---|")
    for name, mb in team_memory(args).items():
        print(f"| {name} | {mb:,.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
