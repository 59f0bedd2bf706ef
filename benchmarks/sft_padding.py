"""How much of an SFT step is padding: the configured SFT on its real rows, padded batches versus padding-free.

Run: .venv/bin/python benchmarks/sft_padding.py [--model smollm2] [--steps 12] [--threads 2]
Needs the base checkpoint and the base model's self answers for every alignment dataset
(`snakemake --until self_answers results/<model>/checkpoints/sft`).

Builds the SFT rows exactly as the sft rule does (`load_alignment_rows`, `sft_targets`), then:
- counts, over one epoch of the trainer's own batches, the real tokens against the tokens a padded batch carries;
- trains the first ``--steps`` optimizer steps twice from the same seed, batches padded to their longest row
  and batches flattened into one sequence (`padding_free`), and compares seconds per step and each step's loss.
Writes benchmarks/out/sft_padding.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from statistics import median_high
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def padding_census(trainer) -> dict:
    """Real and padded tokens over one epoch of the trainer's batches (no model compute)."""
    real = padded = batches = 0
    for batch in trainer.get_train_dataloader():
        batches += 1
        ids = batch["input_ids"]
        if "attention_mask" in batch:
            real += int(batch["attention_mask"].sum())
            padded += ids.numel()
        else:  # padding-free: one flattened row
            real += ids.numel()
            padded += ids.numel()
    return {"batches": batches, "real_tokens": real, "batch_tokens": padded,
            "padding_fraction": round(1 - real / padded, 4) if padded else 0.0}


def timed_steps(trainer) -> list[dict]:
    """Train, recording each optimizer step's seconds and loss."""
    from transformers import TrainerCallback

    steps: list[dict] = []
    clock = [time.perf_counter()]

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            steps.append({"seconds": now - clock[0]})
            clock[0] = now

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and steps:
                steps[-1]["loss"] = float(logs["loss"])

    trainer.add_callback(Stamp())
    trainer.train()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sft_padding.json"))
    args = parser.parse_args()

    import torch

    from neuronkit import runtime
    from neuronkit.alignment_data import AlignmentDataConfig, load_alignment_rows, sft_targets
    from neuronkit.config import load_config_files, stage_params
    from neuronkit.judge import refusal_judge_from_config
    from neuronkit.models import load_variant
    from neuronkit.tune import TrainConfig, _build_trainer, sft_examples

    cfg = load_config_files([ROOT / "config.yaml"])
    results = ROOT / "results" / args.model
    data_cfg = AlignmentDataConfig.from_config(cfg["alignment"])
    answers = {d: str(results / "self_answers" / f"{d}.parquet") for d in data_cfg.datasets()}
    rows = load_alignment_rows(answers, data_cfg, refusal_judge_from_config(cfg["judge"]))
    examples = sft_examples(*sft_targets(rows))
    params = stage_params(cfg, args.model, "sft")
    result = {"model": args.model, "machine": platform.platform(), "threads": args.threads, "rows": len(examples),
              "sft": params, "steps": args.steps, "modes": {}}
    for mode in ("padded", "padding_free"):
        runtime.setup(seed=cfg["seed"], threads=args.threads)
        train = TrainConfig.from_config("sft", {**params, "seed": cfg["seed"], "max_steps": args.steps,
                                                "padding_free": mode == "padding_free"})
        model, tok = load_variant(results / "checkpoints" / "base")
        model.train()
        with tempfile.TemporaryDirectory() as work:
            trainer = _build_trainer(train, model, tok, examples, Path(work), torch.device("cpu"))
            census = padding_census(trainer)
            steps = timed_steps(trainer)
        seconds = [s["seconds"] for s in steps[1:]]  # the first step pays the warm-up
        result["modes"][mode] = {"census": census, "median_seconds_per_step": round(median_high(seconds), 3),
                                 "total_seconds": round(sum(s["seconds"] for s in steps), 2),
                                 "losses": [s.get("loss") for s in steps]}
        print(json.dumps({mode: result["modes"][mode]}), flush=True)
    padded, free = result["modes"]["padded"], result["modes"]["padding_free"]
    result["time_ratio_padding_free_vs_padded"] = round(
        free["median_seconds_per_step"] / padded["median_seconds_per_step"], 3)
    pairs = [(a, b) for a, b in zip(padded["losses"], free["losses"]) if a is not None and b is not None]
    result["max_relative_loss_difference"] = max(abs(a - b) / abs(a) for a, b in pairs) if pairs else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "modes"}, indent=2))


if __name__ == "__main__":
    main()
