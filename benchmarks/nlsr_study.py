"""NLSR settings study: which ordering, rate and mode restore safety after the harmful fine-tuning attack.

Run: .venv/bin/python benchmarks/nlsr_study.py [--model smollm2] [--p 0.1 0.2] [--threads 2]
Needs the workflow's NLSR inputs for that model (attacked_p*, reference, the score's masks, the prepared datasets):
`snakemake results/<model>/sections/nlsr.json` first. Each setting realigns every attacked adapter into a scratch
directory, then generates, judges and scores exactly as the workflow does. Writes benchmarks/out/nlsr_study.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALL = {"mode": "adaptive", "rate": 1.0, "epsilon": 0.0}
# (label, RealignConfig overrides, keep fraction of the masks); the first row is the published setting.
SETTINGS = [
    ("adaptive low-first rate 0.5", {"mode": "adaptive", "ordering": "low_similarity_first"}, 0.2),
    ("adaptive high-first rate 0.5", {"mode": "adaptive", "ordering": "high_similarity_first"}, 0.2),
    ("adaptive low-first rate 0.8", {"mode": "adaptive", "ordering": "low_similarity_first", "rate": 0.8}, 0.2),
    ("adaptive high-first rate 0.8", {"mode": "adaptive", "ordering": "high_similarity_first", "rate": 0.8}, 0.2),
    ("all modules, keep 0.2", ALL, 0.2),
    ("adaptive low-first rate 0.5, keep 0.5", {"mode": "adaptive", "ordering": "low_similarity_first"}, 0.5),
    ("all modules, keep 0.5", ALL, 0.5),
    ("all modules, keep 1.0 (= the reference's factors)", ALL, 1.0),
]


def load_workflow_config() -> dict:
    """The validated workflow config, as the Snakefile sees it."""
    from neuronkit.config import load_config_files

    return load_config_files([ROOT / "config.yaml"])


def evaluate_adapter(ckpt: Path, work: Path, cfg: dict, model: str) -> dict:
    """Harmful score (refusal judge) on the NLSR safety sets and exact-match task accuracy on the task set."""
    import pyarrow.parquet as pq

    from neuronkit.config import stage_params
    from neuronkit.evaluate import score_scored_file
    from neuronkit.generate import GenerationConfig, generate_file
    from neuronkit.judge import judge_file
    from neuronkit.task import score_generations

    gen = GenerationConfig(seed=cfg["seed"], **stage_params(cfg, model, "generate"))
    nlsr = stage_params(cfg, model, "nlsr")
    data = ROOT / "results" / "data"
    out = {}
    for dataset in nlsr["datasets"]:
        raw, judged = work / f"{dataset}.gen.parquet", work / f"{dataset}.parquet"
        generate_file(ckpt, data / f"{dataset}.parquet", raw, gen, variant=ckpt.name)
        judge_file(raw, judged, cfg["judge"])
        fig = score_scored_file(str(judged))
        out[f"{fig['metric']}:{dataset}"] = fig["value"]
    task = data / f"{nlsr['task_test']}.parquet"
    raw = work / "task.parquet"
    generate_file(ckpt, task, raw, gen, variant=ckpt.name)
    out["task_accuracy"] = score_generations(pq.read_table(raw), pq.read_table(task))["accuracy"]
    return out


def masks_at(keep: float, cfg: dict, model: str, cache: Path) -> Path:
    """Masks of the reference at another keep fraction, scored as the safety_masks rule does (cached per run)."""
    from neuronkit.config import stage_params
    from neuronkit.scores.adapter_scores import ScoreConfig, score_reference_file

    out = cache / f"masks_keep{keep}.safetensors"
    if not out.exists():
        nlsr = stage_params(cfg, model, "nlsr")
        results = ROOT / "results" / model
        score_reference_file(results / "checkpoints" / "reference",
                             results / "scored" / "reference" / f"{nlsr['calibration']}.parquet", out,
                             ScoreConfig(method=nlsr["score"], keep_fraction=keep, seed=cfg["seed"]),
                             keep_all=nlsr["calibration_keep"] == "all")
    return out


def run_setting(label: str, overrides: dict, masks: Path, p: str, cfg: dict, model: str, scratch: Path) -> dict:
    """Realign attacked_p{p} with one setting and evaluate it."""
    from neuronkit.realign import RealignConfig, realign

    rcfg = RealignConfig(**overrides, seed=cfg["seed"])  # unset fields: the published defaults, not the config
    ckpts = ROOT / "results" / model / "checkpoints"
    out_dir = scratch / f"nlsr_p{p}"
    start = time.perf_counter()
    summary = realign(ckpts / f"attacked_p{p}", ckpts / "reference", out_dir, rcfg,
                      masks_path=masks, name=f"nlsr_p{p}")
    figures = evaluate_adapter(out_dir, scratch, cfg, model)
    return {"setting": label, "p": float(p), "config": asdict(rcfg), "masks": masks.name,
            "modules_selected": f"{summary['n_selected']}/{summary['n_modules']}",
            "entries_changed": summary["entries_changed"],
            "figures": figures, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--p", nargs="+", default=["0.1", "0.2"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", type=int, help="indices into SETTINGS (default: all)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "nlsr_study.json"))
    args = ap.parse_args()

    from neuronkit import runtime

    cfg = load_workflow_config()
    runtime.setup(seed=cfg["seed"], threads=args.threads)
    chosen = [SETTINGS[i] for i in args.settings] if args.settings else SETTINGS
    result = {"model": args.model, "machine": platform.platform(), "threads": args.threads, "rows": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nlsr_study_masks_") as cache:
        for p in args.p:
            for label, overrides, keep in chosen:
                masks = masks_at(keep, cfg, args.model, Path(cache))
                with tempfile.TemporaryDirectory() as scratch:
                    row = run_setting(label, overrides, masks, p, cfg, args.model, Path(scratch))
                result["rows"].append(row)
                Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # kept if a later row fails
                print(json.dumps({k: row[k] for k in ("setting", "p", "modules_selected", "figures", "seconds")}),
                      flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
