"""PLND selection study: which per-document top-k gives safety neurons whose deactivation breaks safety, not the model.

Run: .venv/bin/python benchmarks/plnd_deactivation_study.py [--model smollm2] [--grid 200:100 50:25 ...]
Needs the aligned checkpoint and the prepared datasets (`snakemake results/<model>/sections/evaluation.json`).
PLND runs once per document; each (ffn_top_k, attn_top_k) setting is then an intersection of those same scores,
so the sets match what the plnd rule would write with that setting. For each set (safety, and RSN = safety minus
foundation) and a random control with the same per-layer, per-module counts, the aligned model answers
harmful_test and benign_test with the neurons zeroed; the refusal judge scores them, and the benign prompts'
perplexity shows whether the model still works. Writes benchmarks/out/plnd_deactivation_study.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRID = ["200:100", "100:50", "50:25", "20:10", "10:5"]
DATASETS = ("harmful_test", "benign_test")


def document_scores(model, tok, texts: list[str], cfg) -> list[dict]:
    """PLND importance of every neuron, per document (the expensive part, done once)."""
    from tqdm.auto import tqdm

    from neuronkit.scores.plnd import encode, plnd_importance

    return [plnd_importance(model, encode(tok, t, cfg), modules=cfg.modules, ffn_score=cfg.ffn_score)
            for t in tqdm(texts, desc="PLND", unit="doc")]


def intersect(scores: list[dict], cfg, shape: dict):
    """The neuron set the plnd rule would write for ``cfg``, from cached per-document scores."""
    from neuronkit.scores.plnd import IntersectionReducer

    reducer = IntersectionReducer(cfg)
    for s in scores:
        reducer.update(s)
    return reducer.index({"shape": shape})


def deactivation_figures(model, tok, index, data: Path, work: Path, cfg: dict, gen) -> dict:
    """Harmful score, over-refusal and benign-prompt perplexity of the model with ``index`` zeroed."""
    from neuronkit.data import read_table
    from neuronkit.evaluate import study_figures
    from neuronkit.perplexity import perplexity
    from neuronkit.hooks import deactivated

    with deactivated(model, index):
        out = {"neurons": len(index), **study_figures(model, tok, [data / f"{d}.parquet" for d in DATASETS], gen,
                                                      cfg["judge"], work)}
        benign = read_table(data / "benign_test.parquet").column("prompt").to_pylist()
        out["perplexity"] = perplexity(model, tok, benign)["perplexity"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--grid", nargs="+", default=DEFAULT_GRID, help="ffn_top_k:attn_top_k settings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "plnd_deactivation_study.json"))
    args = ap.parse_args()

    from dataclasses import replace

    from neuronkit import runtime
    from neuronkit.archs import model_shape
    from neuronkit.config import load_config_files, stage_params
    from neuronkit.data import read_table
    from neuronkit.perplexity import perplexity
    from neuronkit.generate import GenerationConfig
    from neuronkit.models import load_variant
    from neuronkit.scores.plnd import PLNDConfig, rsn_neurons

    cfg = load_config_files([ROOT / "config.yaml"])
    runtime.setup(seed=cfg["seed"], threads=args.threads)
    plnd = stage_params(cfg, args.model, "plnd")
    base = PLNDConfig(max_length=plnd["max_length"], chat=plnd["chat"], progress=False)
    gen = GenerationConfig(seed=cfg["seed"], **stage_params(cfg, args.model, "generate"))
    data = ROOT / "results" / "data"
    model, tok = load_variant(ROOT / "results" / args.model / "checkpoints" / plnd["variant"])
    shape = model_shape(model.config)

    start = time.perf_counter()
    harmful = read_table(data / f"{plnd['dataset']}.parquet").column("prompt").to_pylist()[:plnd["n_docs"]]
    benign = read_table(data / f"{plnd['foundation_dataset']}.parquet").column("prompt").to_pylist()
    safety_scores = document_scores(model, tok, harmful, base)
    foundation_scores = document_scores(model, tok, benign, base)
    result = {"model": args.model, "machine": platform.platform(), "threads": args.threads,
              "documents": {"safety": len(harmful), "foundation": len(benign)},
              "plnd_seconds": round(time.perf_counter() - start, 1),
              "sites": sum(shape["num_layers"] * n for n in shape["sites"].values()),
              "intact": {"perplexity": perplexity(model, tok, read_table(data / "benign_test.parquet")
                                                  .column("prompt").to_pylist())["perplexity"]},
              "rows": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for setting in args.grid:
        ffn_k, attn_k = (int(x) for x in setting.split(":"))
        sel = replace(base, ffn_top_k=ffn_k, attn_top_k=attn_k)
        safety = intersect(safety_scores, sel, shape)
        rsn = rsn_neurons(safety, intersect(foundation_scores, sel, shape))
        row = {"ffn_top_k": ffn_k, "attn_top_k": attn_k,
               "per_module": {m: int(sum(c)) for m, c in safety.per_layer_counts().items()}}
        for name, index in (("safety", safety), ("rsn", rsn)):
            for control, chosen in ((name, index), (f"random_{name}", index.random_like(cfg["deactivation"]
                                                                                         ["random_seed"]))):
                if len(chosen) == 0:
                    row[control] = {"neurons": 0}
                    continue
                with tempfile.TemporaryDirectory() as work:
                    row[control] = deactivation_figures(model, tok, chosen, data, Path(work), cfg, gen)
        result["rows"].append(row)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # kept if a later setting fails
        print(json.dumps({k: ({kk: vv for kk, vv in v.items() if not kk.startswith(("examples", "flags"))}
                              if isinstance(v, dict) else v) for k, v in row.items()}), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
