"""Seconds per LoRA SFT step on SmolLM2 with trl's defaults versus neuronkit's CPU settings.

Run: .venv/bin/python benchmarks/train_step.py [--steps 4] [--out benchmarks/out/train_step.json]
Needs results/smollm2/checkpoints/base (run the workflow's materialize rule first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from neuronkit import runtime
from neuronkit.models import load_variant
from neuronkit.tune import AdapterConfig, TrainConfig, _build_trainer, sft_examples

SETTINGS = {
    "neuronkit_cpu": {},  # fp32, no gradient checkpointing (device_training_args)
    "trl_defaults": {"bf16": True, "gradient_checkpointing": True},
}


def time_steps(ckpt: Path, overrides: dict, steps: int, batch: int) -> float:
    """Median seconds per optimizer step over ``steps`` steps (first step excluded as warm-up)."""
    from transformers import TrainerCallback

    model, tok = load_variant(ckpt)
    model.train()
    prompts = [f"Write two sentences about topic number {i}." for i in range(batch * (steps + 1))]
    answers = ["Here are two sentences. They are about the topic you asked for." for _ in prompts]
    cfg = TrainConfig(method="sft", max_steps=steps + 1, batch_size=batch, max_length=96,
                      adapter=AdapterConfig(r=8, alpha=16))
    trainer = _build_trainer(cfg, model, tok, sft_examples(prompts, answers), Path("/tmp/nk-bench"),
                             torch.device("cpu"), arg_overrides=overrides)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    trainer.add_callback(Stamp())
    start = time.perf_counter()
    trainer.train()
    durations = [b - a for a, b in zip([start] + stamps, stamps)][1:]
    return sorted(durations)[len(durations) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", default="results/smollm2/checkpoints/base")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="benchmarks/out/train_step.json")
    args = parser.parse_args()
    runtime.setup(seed=0, threads=args.threads)
    result = {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
              "torch": torch.__version__, "batch": args.batch, "seconds_per_step": {}}
    for name, overrides in SETTINGS.items():
        result["seconds_per_step"][name] = round(time_steps(Path(args.ckpt), overrides, args.steps, args.batch), 3)
    sps = result["seconds_per_step"]
    result["speedup_vs_trl_defaults"] = round(sps["trl_defaults"] / sps["neuronkit_cpu"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
