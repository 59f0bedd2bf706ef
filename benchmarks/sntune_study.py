"""SN-Tune settings study: which learning rate, epochs and benign mix install refusals without over-refusal.

Run: .venv/bin/python benchmarks/sntune_study.py [--model smollm2] [--settings 0 2] [--threads 2]
Needs the workflow's SN-Tune inputs (`snakemake results/<model>/sections/sntune.json` first): the tuned variant's
checkpoint, the PLND index, the prepared datasets and the base model's benign self-answers. Each setting overrides
the model's configured SN-Tune parameters, tunes a fresh copy in memory exactly as the sntune rule does, answers
harmful_test and benign_test, and is judged like the workflow. Writes benchmarks/out/sntune_study.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (label, SN-Tune overrides on top of the model's configured setting)
SETTINGS = [
    ("configured", {}),
    ("benign 25", {"benign_docs": 25}),
    ("benign 25, lr 3e-4", {"benign_docs": 25, "learning_rate": 0.0003}),
    ("benign 50, lr 3e-4", {"benign_docs": 50, "learning_rate": 0.0003}),
    ("benign 25, 8 epochs", {"benign_docs": 25, "epochs": 8}),
    ("benign 50, lr 3e-4, 8 epochs", {"benign_docs": 50, "learning_rate": 0.0003, "epochs": 8}),
    ("massive down columns frozen (ratio 100)", {"massive_down_ratio": 100.0}),
    ("massive down columns frozen (ratio 30)", {"massive_down_ratio": 30.0}),
    ("massive down columns frozen (ratio 100), lr 5e-4", {"massive_down_ratio": 100.0, "learning_rate": 0.0005}),
    ("massive down columns frozen (ratio 100), 8 epochs", {"massive_down_ratio": 100.0, "epochs": 8}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", type=int, help="indices into SETTINGS (default: all)")
    ap.add_argument("--index", help="neuron index to tune (default: results/<model>/neurons/plnd.parquet)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sntune_study.json"))
    args = ap.parse_args()

    from neuronkit import runtime
    from neuronkit.config import load_config_files, stage_params
    from neuronkit.data import read_table
    from neuronkit.evaluate import study_figures
    from neuronkit.perplexity import perplexity
    from neuronkit.generate import GenerationConfig
    from neuronkit.models import load_variant
    from neuronkit.neurons import NeuronIndex
    from neuronkit.significance import mcnemar_exact
    from neuronkit.sntune import SNTuneConfig, tune_model

    cfg = load_config_files([ROOT / "config.yaml"])
    runtime.setup(seed=cfg["seed"], threads=args.threads)
    configured = stage_params(cfg, args.model, "sntune")
    gen = GenerationConfig(seed=cfg["seed"], **stage_params(cfg, args.model, "generate"))
    data, results = ROOT / "results" / "data", ROOT / "results" / args.model
    index_path = Path(args.index) if args.index else results / "neurons" / "plnd.parquet"
    index = NeuronIndex.read(index_path)
    harmful = read_table(data / f"{configured['dataset']}.parquet")
    benign = read_table(results / "self_answers" / f"{configured['benign_dataset']}.parquet")
    ppl_text = read_table(data / "benign_test.parquet").column("prompt").to_pylist()
    parent = results / "checkpoints" / configured["variant"]
    chosen = [SETTINGS[i] for i in args.settings] if args.settings else SETTINGS
    result = {"model": args.model, "machine": platform.platform(), "threads": args.threads,
              "configured": configured, "index": str(index_path), "neurons": len(index), "rows": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for label, overrides in chosen:
        params = {k: v for k, v in {**configured, **overrides}.items()
                  if k not in ("variant", "dataset", "benign_dataset")}
        scfg = SNTuneConfig.from_config(dict(params, seed=cfg["seed"]))
        model, tok = load_variant(parent)
        start = time.perf_counter()
        summary = tune_model(model, tok, index, harmful, scfg, benign=benign, progress=False)
        with tempfile.TemporaryDirectory() as work:
            figures = study_figures(model, tok, [data / "harmful_test.parquet", data / "benign_test.parquet"], gen,
                                    cfg["judge"], work, n_examples=3)
        figures["perplexity"] = perplexity(model, tok, ppl_text)["perplexity"]
        row = {"setting": label, "overrides": overrides, "steps": summary["steps"],
               "trained_fraction": summary["trained_fraction"], "final_loss": summary["final_loss"],
               "n_massive_down_frozen": summary["n_massive_down_frozen"],
               "seconds_per_step": round(summary["seconds_per_step"], 2), "figures": figures,
               "seconds": round(time.perf_counter() - start, 1)}
        if result["rows"]:  # each setting against the first, on the same prompts
            first = result["rows"][0]["figures"]
            row["paired_vs_first"] = {key.split(":", 1)[1]: mcnemar_exact(first[key], figures[key])
                                      for key in figures if key.startswith("flags:")}
        result["rows"].append(row)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # kept if a later setting fails
        print(json.dumps({k: v for k, v in row.items() if k != "figures"} |
                         {k: v for k, v in figures.items() if not k.startswith(("examples", "flags"))}), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
