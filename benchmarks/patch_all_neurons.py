"""The sanity case of activation patching on a real model: with every MLP neuron patched, does U answer as A does?

Run: .venv/bin/python benchmarks/patch_all_neurons.py --u results/smollm2/checkpoints/base
     --a results/smollm2/checkpoints/aligned_mlp [--a results/smollm2/checkpoints/aligned] [--n 20] [--tokens 32]
For each A, U = base answers the first n prompts of the dataset (greedy) with all MLP neurons guided by A, in the
two-model and the fused mode, and the answers are compared with A's own. For a pair whose difference sits only at
the neurons (adapters on gate_proj and up_proj: aligned_mlp) every answer must be A's (up to floating-point ties);
for a pair with adapters on every projection (aligned) the gap is the ceiling no choice of neurons can pass.
Writes benchmarks/out/patch_all_neurons.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def all_mlp_neurons(model) -> dict:
    """Every MLP neuron of every layer, in the layer -> indices form the patching contexts take."""
    import torch

    return {layer: torch.arange(model.config.intermediate_size) for layer in range(model.config.num_hidden_layers)}


def first_difference(a: str, b: str) -> int | None:
    """Character offset of the first difference between two answers (None when equal)."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(got: list[str], want: list[str]) -> dict:
    """How many answers are A's exactly, and where the others first differ."""
    diffs = [first_difference(g, w) for g, w in zip(got, want)]
    return {"identical": sum(d is None for d in diffs), "n": len(diffs),
            "first_difference_chars": [d for d in diffs if d is not None]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--u", required=True, help="the unaligned checkpoint (the patched model)")
    ap.add_argument("--a", nargs="+", required=True, help="aligned checkpoints (each one's pair is checked)")
    ap.add_argument("--prompts", default=str(ROOT / "results" / "data" / "harmful_test.parquet"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "patch_all_neurons.json"))
    args = ap.parse_args()

    from neuronkit import runtime
    from neuronkit.data import read_table
    from neuronkit.generate import GenerationConfig, generate_responses
    from neuronkit.models import load_variant
    from neuronkit.patching import guided_in_each_mode

    runtime.setup(seed=0, threads=args.threads)
    prompts = read_table(args.prompts).column("prompt").to_pylist()[:args.n]
    gen = GenerationConfig(max_new_tokens=args.tokens, batch_size=args.n, do_sample=False, seed=0)
    model_u, tok = load_variant(args.u)
    plain_u = generate_responses(model_u, tok, prompts, gen, desc="U")
    result = {"machine": platform.platform(), "u": args.u, "prompts": args.prompts, "n": len(prompts),
              "max_new_tokens": args.tokens, "pairs": []}
    for a_ckpt in args.a:
        model_a, _ = load_variant(a_ckpt)
        want = generate_responses(model_a, tok, prompts, gen, desc="A")
        del model_a
        row = {"a": a_ckpt, "u_plain_vs_a": compare(plain_u, want)}
        runs = guided_in_each_mode(model_u, all_mlp_neurons(model_u),
                                   lambda: generate_responses(model_u, tok, prompts, gen, desc="U, all neurons from A"),
                                   a_ckpt=a_ckpt, u_ckpt=args.u)
        for mode, (got, seconds) in runs.items():
            row[mode] = {**compare(got, want), "seconds": seconds,
                         "examples": [{"a": w, "patched": g} for g, w in list(zip(got, want))[:2]]}
        result["pairs"].append(row)
        print(json.dumps({k: (v if not isinstance(v, dict) else {x: v[x] for x in ("identical", "n")})
                          for k, v in row.items()}), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
