"""PLND positions study: which tokens the safety neurons come from, and whether they are safety-specific.

Run: .venv/bin/python benchmarks/plnd_positions.py [--model smollm2] [--results results] [--deactivate SETTING ...]
     [--specific]
Needs the detected checkpoint and the prepared PLND datasets (`snakemake results/<model>/neurons/plnd.parquet`).
For each scoring setting (every position of the chat-wrapped document, as the default does; only the document's own
tokens, `plnd.positions: document`; the bare document, `plnd.chat: false`) it detects the safety set (harmful
documents) and the foundation set (benign documents) with the model's configured top-k, and reports their sizes,
how many safety neurons are also foundation neurons (the SN-Tune issue measured 95% with the default), and the
peak-share summary (how many MLP neurons keep over half their h^2 on one token).
With `--deactivate SETTING ...` the detected model also answers harmful_test and benign_test with each named
setting's safety set zeroed, and with its two controls zeroed (random neurons of equal per-layer counts; neurons
matched on activation magnitude), judged as the workflow judges (harmful score, degenerate rate, over-refusal), with
the benign prompts' perplexity beside. With `--specific`, our safety-specific ranking
(`neuronkit.scores.plnd.specific_neurons`: log mean harmful minus log mean benign importance) picks as many neurons
per module as the document-positions intersection, and is deactivated the same way.
Writes benchmarks/out/plnd_positions_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"chat, all positions (default)": {"chat": True, "positions": "all"},
            "chat, document positions": {"chat": True, "positions": "document"},
            "bare document": {"chat": False, "positions": "all"}}


def detect(model, tok, texts: list[str], cfg) -> dict:
    """One PLND set and its summary."""
    from neuronkit.scores.plnd import detect_neurons

    started = time.monotonic()
    index = detect_neurons(model, tok, texts, cfg, {})
    return {"index": index, "seconds": round(time.monotonic() - started, 1)}


DEACTIVATION_SETS = ("harmful_test", "benign_test")


def deactivation_rows(model, tok, index, harmful_docs, cfg: dict, model_name: str, results: Path, c) -> dict:
    """The safety set and each control zeroed: judged figures on the deactivation sets and benign perplexity."""
    import tempfile

    from neuronkit.config import stage_params
    from neuronkit.data import read_table
    from neuronkit.deactivate import SELECTIONS, ControlConfig, control_selection
    from neuronkit.evaluate import study_scores
    from neuronkit.generate import GenerationConfig
    from neuronkit.hooks import deactivated
    from neuronkit.perplexity import perplexity

    gen = GenerationConfig(seed=cfg["seed"], **stage_params(cfg, model_name, "generate"))
    d = stage_params(cfg, model_name, "deactivation")
    controls = ControlConfig(random_seed=d["random_seed"], magnitude_window=d["magnitude_window"],
                             magnitude_docs=tuple(harmful_docs), chat=c.chat, max_length=c.max_length)
    data = results / "data"
    benign = read_table(data / "benign_test.parquet").column("prompt").to_pylist()
    out = {}
    for selection in SELECTIONS:
        chosen = control_selection(model, tok, index, selection, controls)
        with deactivated(model, chosen), tempfile.TemporaryDirectory() as work:
            figures, _ = study_scores(model, tok, [data / f"{s}.parquet" for s in DEACTIVATION_SETS], gen,
                                      cfg["judge"], work, base_ckpt=results / model_name / "checkpoints" / "base")
            out[selection] = {"neurons": len(chosen), "perplexity": perplexity(model, tok, benign)["perplexity"],
                              **{s: {k: f[k] for k in ("metric", "value", "ci95", "n", "degenerate") if k in f}
                                 for s, f in figures.items()}}
        print(f"  zeroed {selection:9} ({len(chosen)}): " + ", ".join(
            f"{s} {out[selection][s]['value']}%" for s in DEACTIVATION_SETS)
            + f", perplexity {out[selection]['perplexity']:.1f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--results", default=str(ROOT / "results"), help="the workflow's results folder")
    ap.add_argument("--deactivate", nargs="*", default=[], choices=list(SETTINGS),
                    help="settings whose safety set (and controls) are also deactivated")
    ap.add_argument("--specific", action="store_true",
                    help="also rank by harmful against benign mean importance (document positions; as many neurons "
                         "per module as that setting's intersection) and deactivate that set and its controls")
    args = ap.parse_args()

    from dataclasses import replace

    from neuronkit import runtime
    from neuronkit.config import load_config_files, stage_params
    from neuronkit.data import read_table
    from neuronkit.models import load_variant
    from neuronkit.scores.plnd import PLNDConfig

    cfg = load_config_files([ROOT / "config.yaml"])
    runtime.setup(seed=cfg["seed"], threads=2)
    p = stage_params(cfg, args.model, "plnd")
    variant, dataset, foundation, n_docs = p["variant"], p["dataset"], p["foundation_dataset"], p["n_docs"]
    base_cfg = PLNDConfig.from_stage(p, progress=False)
    results = Path(args.results)
    model, tok = load_variant(results / args.model / "checkpoints" / variant)
    harmful = read_table(results / "data" / f"{dataset}.parquet").column("prompt").to_pylist()[:n_docs]
    benign = read_table(results / "data" / f"{foundation}.parquet").column("prompt").to_pylist()[:n_docs]
    out = {"model": args.model, "variant": variant, "n_docs": len(harmful), "machine": platform.platform(),
           "params": base_cfg.to_meta(), "settings": {}}
    for name, change in SETTINGS.items():
        c = replace(base_cfg, **change)
        safety, found = detect(model, tok, harmful, c), detect(model, tok, benign, c)
        s, f = safety["index"], found["index"]
        shared = len(s.intersect(f))
        row = {"change": change, "safety": len(s), "foundation": len(f), "safety_also_foundation": shared,
               "share_also_foundation": round(shared / len(s), 4) if len(s) else None,
               "rsn": len(s) - shared, "per_module": {m: int((s.module == m).sum()) for m in sorted(set(s.module))},
               "peak_share": s.meta.get("peak_share"), "seconds": safety["seconds"] + found["seconds"]}
        if name in args.deactivate:
            row["deactivation"] = deactivation_rows(model, tok, s, harmful, cfg, args.model, results, c)
        out["settings"][name] = row
        print(f"{name:34} safety {row['safety']:5d}  also foundation {row['share_also_foundation']}  "
              f"rsn {row['rsn']:4d}  MLP over half on one token {(row['peak_share'] or {}).get('over_half')}")
    if args.specific:
        from neuronkit.archs import model_shape
        from neuronkit.scores.plnd import mean_importance, specific_neurons

        c = replace(base_cfg, **SETTINGS["chat, document positions"])
        counts = out["settings"]["chat, document positions"]["per_module"]
        started = time.monotonic()
        index = specific_neurons(mean_importance(model, tok, harmful, c), mean_importance(model, tok, benign, c),
                                 counts, {"shape": model_shape(model.config)})
        row = {"counts": counts, "seconds": round(time.monotonic() - started, 1),
               "per_layer": index.per_layer_counts()}
        print(f"harmful-specific ranking, document positions: {len(index)} neurons {counts}", flush=True)
        row["deactivation"] = deactivation_rows(model, tok, index, harmful, cfg, args.model, results, c)
        out["specific"] = row
    dest = ROOT / "benchmarks" / "out" / f"plnd_positions_{args.model}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
