"""Do the two patching modes give the same tokens at every k? two_model against fused, with ties counted.

Run: .venv/bin/python benchmarks/patching_modes.py --results results/smollm2 [--a aligned_mlp] [--u base]
     [--k 0.005 0.01 0.02 0.05 0.1] [--dataset harmful_test] [--n 20] [--tokens 64]
For every k and selection (the contrast index's top k, and its random control with the same per-layer counts and
seed as the workflow), U answers the first n prompts of the dataset greedily in one batch with the neurons guided by
A, once in the two-model mode and once in the fused mode (rows [U; A] through one copy of the weights). Answers are
compared token by token; where they part, each mode's margin for its own token over the other's is read from the
scores that chose it: below --tol in both modes, the difference is a floating-point tie, not a disagreement.
Writes benchmarks/out/patching_modes.json (per setting: identical, ties, differences, seconds per mode).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results" / "smollm2"), help="a model's results directory")
    ap.add_argument("--u", default="base", help="the patched variant (a checkpoint under <results>/checkpoints)")
    ap.add_argument("--a", default="aligned_mlp", help="the guide (U plus adapters, so that fused can run)")
    ap.add_argument("--k", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    ap.add_argument("--selections", nargs="+", default=["safety", "random"], choices=["safety", "random"])
    ap.add_argument("--dataset", default="harmful_test")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="the random control's seed (patching.random_seed)")
    ap.add_argument("--tol", type=float, default=1e-3, help="margin below which a parting is a tie")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "patching_modes.json"))
    args = ap.parse_args()

    from neuronkit import runtime
    from neuronkit.atomic import write_json
    from neuronkit.data import read_table
    from neuronkit.generate import greedy_steps
    from neuronkit.models import load_variant
    from neuronkit.neurons import NeuronIndex, as_k
    from neuronkit.patching import compare_runs, guided_in_each_mode, select_neurons

    runtime.setup(seed=0, threads=args.threads)
    results = Path(args.results)
    u_ckpt, a_ckpt = results / "checkpoints" / args.u, results / "checkpoints" / args.a
    prompts_file = results.parent / "data" / f"{args.dataset}.parquet"
    prompts = read_table(prompts_file).column("prompt").to_pylist()[:args.n]
    model_u, tok = load_variant(u_ckpt)
    model_a, _ = load_variant(a_ckpt)
    index = NeuronIndex.read(results / "neurons" / "contrast.parquet")
    index.check_fits(model_u.config, origin="contrast index")
    out = {"machine": platform.platform(), "threads": args.threads, "u": str(u_ckpt), "a": str(a_ckpt),
           "prompts": str(prompts_file), "n": len(prompts), "max_new_tokens": args.tokens, "tol": args.tol,
           "decoding": "greedy, one batch of n", "settings": []}
    for k in args.k:
        for selection in args.selections:
            chosen = select_neurons(index, as_k(k), selection, args.seed).by_layer("mlp")
            runs = guided_in_each_mode(model_u, chosen, lambda: greedy_steps(model_u, tok, prompts, args.tokens),
                                       a_ckpt=a_ckpt, u_ckpt=u_ckpt, model_a=model_a)
            row = {"k": k, "selection": selection, "neurons": sum(len(v) for v in chosen.values()),
                   "seconds": {mode: seconds for mode, (_, seconds) in runs.items()},
                   **compare_runs(*runs["two_model"][0], *runs["fused"][0], tol=args.tol)}
            out["settings"].append(row)
            print(json.dumps({key: row[key] for key in ("k", "selection", "neurons", "identical", "ties",
                                                        "differences", "seconds")}), flush=True)
    print(f"wrote {write_json(out, args.out)}")


if __name__ == "__main__":
    main()
