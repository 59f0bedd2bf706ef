"""Generation throughput by batch size, and whether the answers stay the same.

Run: .venv/bin/python benchmarks/generation_batch.py [--model smollm2] [--dataset xstest_safe] [--n 96]
     [--batch-sizes 8 16 32 64] [--variant base] [--threads 2]
Needs results/<model>/checkpoints/<variant> and results/data/<dataset>.parquet. Greedy answers of the configured
length for the first n prompts, once per batch size, in one process; reports seconds, new tokens per second and how
many answers differ from the configured batch size's. Writes benchmarks/out/generation_batch.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--variant", default="base")
    ap.add_argument("--dataset", default="xstest_safe")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "generation_batch.json"))
    args = ap.parse_args()

    from neuronkit import runtime
    from neuronkit.config import load_config_files, stage_params
    from neuronkit.data import read_table
    from neuronkit.generate import GenerationConfig, generate_responses
    from neuronkit.models import load_variant

    cfg = load_config_files([ROOT / "config.yaml"])
    runtime.setup(seed=cfg["seed"], threads=args.threads)
    configured = GenerationConfig(seed=cfg["seed"], **stage_params(cfg, args.model, "generate"))
    prompts = read_table(ROOT / "results" / "data" / f"{args.dataset}.parquet").column("prompt").to_pylist()[:args.n]
    model, tok = load_variant(ROOT / "results" / args.model / "checkpoints" / args.variant)
    sizes = sorted(set(args.batch_sizes) | {configured.batch_size})
    answers, rows = {}, []
    for size in sizes:
        start = time.perf_counter()
        answers[size] = generate_responses(model, tok, prompts, replace(configured, batch_size=size), desc=f"b{size}")
        seconds = time.perf_counter() - start
        tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers[size])
        rows.append({"batch_size": size, "seconds": round(seconds, 2), "answer_tokens": tokens,
                     "tokens_per_second": round(tokens / seconds, 1)})
    reference = answers[configured.batch_size]
    for row in rows:
        row["answers_differing_from_configured"] = sum(a != b for a, b in zip(answers[row["batch_size"]], reference))
    result = {"model": args.model, "variant": args.variant, "dataset": args.dataset, "n": len(prompts),
              "max_new_tokens": configured.max_new_tokens, "configured_batch_size": configured.batch_size,
              "threads": args.threads, "machine": platform.platform(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
