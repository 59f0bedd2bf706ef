"""SN-Tune settings study: which neuron set, learning rate, epochs and benign mix install refusals without
over-refusal, and does the tuned model keep its safety through later downstream fine-tuning (the RSN-Tune claim)?

Run: .venv/bin/python benchmarks/sntune_study.py [--model smollm2] [--settings 0 2] [--threads 2]
     [--plnd positions=document selection=specific | --index PATH|every] [--rsn]
     [--sets harmful_test advbench benign_test xstest_safe] [--downstream] [--out benchmarks/out/sntune_study.json]
Needs the workflow's SN-Tune inputs (`snakemake results/<model>/checkpoints/sntune` first): the parent checkpoint,
the PLND index, the prepared datasets, the base model's benign self-answers and, with --downstream, the NLSR p = 0
mix (`results/<model>/nlsr/mix_p0.0.parquet`).

- Each setting overrides the model's configured SN-Tune parameters, tunes a fresh copy in memory exactly as the
  sntune rule does, answers each set of --sets, and is judged like the workflow (three-way judge, answer perplexity
  under the base); the perplexity of the benign_test prompts is beside it.
- The neuron set is the workflow's (neurons/plnd.parquet, or plnd_specific.parquet with plnd.selection: specific),
  unless --plnd re-detects it: the plnd stage with those overrides, detected by the workflow's own functions on the
  detected variant and cached under benchmarks/out/sntune_study/. --rsn subtracts the foundation set detected with
  the same settings, as the rsntune rule does.
- --downstream then fine-tunes the tuned model on the NLSR attack mix with p = 0 (task rows only; a fresh adapter of
  nlsr.attack's setting, `neuronkit.attack.train_downstream`) and scores it again, with exact McNemar tests of
  after against before on the same prompts.
Paired tests against the first setting of the run are on the same prompts. Writes one JSON (--out), rewritten after
every setting so that a failed later setting loses nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "out" / "sntune_study"

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
    # benign documents from the 256 alignment prompts with the base model's own answers (benign_train has 32)
    ("benign_align 100", {"benign_dataset": "benign_align", "benign_docs": 100}),
    ("benign_align 200", {"benign_dataset": "benign_align", "benign_docs": 200}),
    ("no per-matrix cap", {"max_per_matrix": None}),  # with --index of every neuron: the sanity case
]
STAGE_KEYS = ("variant", "dataset", "benign_dataset")  # what the sntune rule reads beside SNTuneConfig


def parse_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE pairs as a dict, each value read as YAML (safe_load: numbers, booleans, null, strings)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--plnd: expected KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def neuron_sets(cfg: dict, model: str, overrides: dict, rsn: bool) -> tuple[Path, Path | None, dict]:
    """The safety set (and, with ``rsn``, the foundation set) to tune: the workflow's, or re-detected with the plnd
    stage's ``overrides`` by the workflow's own detection functions (cached by their settings)."""
    import copy

    from neuronkit.config import deep_merge, stage_params, validate_config
    from neuronkit.scores.plnd import PLNDConfig, plnd_file, specific_file

    study_cfg = copy.deepcopy(cfg)  # the overrides go on top of the model's own (validated as the config is)
    model_overrides = study_cfg["models"][model].setdefault("overrides", {})
    model_overrides["plnd"] = deep_merge(model_overrides.get("plnd", {}), overrides)
    plnd = stage_params(validate_config(study_cfg), model, "plnd")
    results, data = ROOT / "results" / model, ROOT / "results" / "data"
    if not overrides:
        name = "plnd" if plnd["selection"] == "intersection" else "plnd_specific"
        return (results / "neurons" / f"{name}.parquet",
                results / "neurons" / "plnd_foundation.parquet" if rsn else None, plnd)
    key = hashlib.sha256(json.dumps(plnd, sort_keys=True).encode()).hexdigest()[:12]
    pcfg = PLNDConfig.from_stage(plnd)
    ckpt = results / "checkpoints" / plnd["variant"]
    meta = {"model": model, "variant": plnd["variant"], "params": pcfg.to_meta(), "study_overrides": overrides}
    CACHE.mkdir(parents=True, exist_ok=True)

    def detected(kind: str, dataset: str) -> Path:
        out = CACHE / f"{kind}-{key}.parquet"
        if not out.exists():
            plnd_file(ckpt, data / f"{dataset}.parquet", out, pcfg, n_docs=plnd["n_docs"],
                      meta={**meta, "method": kind, "dataset": dataset})
        return out

    safety = detected("plnd", plnd["dataset"])
    if plnd["selection"] == "specific":
        specific = CACHE / f"plnd_specific-{key}.parquet"
        if not specific.exists():
            specific_file(ckpt, data / f"{plnd['dataset']}.parquet", data / f"{plnd['foundation_dataset']}.parquet",
                          safety, specific, pcfg, n_docs=plnd["n_docs"],
                          meta={**meta, "dataset": plnd["dataset"], "foundation_dataset": plnd["foundation_dataset"]})
        safety = specific
    return safety, detected("plnd_foundation", plnd["foundation_dataset"]) if rsn else None, plnd


def every_neuron_index(ckpt: Path) -> Path:
    """The sanity case's neuron set: every MLP neuron and q/k/v dim of the model (SN-Tune's modules), cached."""
    import torch
    from transformers import AutoConfig

    from neuronkit.archs import model_shape
    from neuronkit.neurons import NeuronIndex
    from neuronkit.sntune import PAPER_MODULES

    out = CACHE / "every_neuron.parquet"
    if not out.exists():
        shape = model_shape(AutoConfig.from_pretrained(ckpt))
        scores = {m: torch.ones(shape["num_layers"], int(n)) for m, n in shape["sites"].items() if m in PAPER_MODULES}
        CACHE.mkdir(parents=True, exist_ok=True)
        NeuronIndex.from_scores(scores, {"method": "every_neuron", "shape": shape}).write(out)
    return out


def score(model, tok, sets: list[Path], gen, cfg: dict, base: Path, ppl_text: list[str]) -> dict:
    """Answers judged as the workflow judges them, plus the benign prompts' perplexity."""
    from neuronkit.evaluate import study_figures
    from neuronkit.perplexity import perplexity

    with tempfile.TemporaryDirectory() as work:
        figures = study_figures(model, tok, sets, gen, cfg["judge"], work, n_examples=3, base_ckpt=base)
    figures["perplexity"] = perplexity(model, tok, ppl_text)["perplexity"]
    return figures


def paired(first: dict, second: dict) -> dict:
    """Exact McNemar per set, on the same prompts (flags counted by the figure: harmful or refused)."""
    from neuronkit.significance import mcnemar_exact

    return {key.split(":", 1)[1]: mcnemar_exact(first[key], second[key]) for key in second
            if key.startswith("flags:") and key in first}


def downstream(model, tok, cfg: dict, model_name: str, work: Path) -> tuple[object, object, dict]:
    """The tuned model fine-tuned on the p = 0 attack mix (a fresh adapter), merged for scoring."""
    from neuronkit import manifest
    from neuronkit.attack import train_downstream
    from neuronkit.config import stage_params
    from neuronkit.models import load_variant
    from neuronkit.sntune import save_checkpoint
    from neuronkit.tune import TrainConfig

    tuned = save_checkpoint(model, tok, work / "tuned", manifest.Variant(
        name="study", model=model_name, kind="full", method="sntune"))
    train = stage_params(cfg, model_name, "nlsr")["attack"]
    mix = ROOT / "results" / model_name / "nlsr" / "mix_p0.0.parquet"
    start = time.perf_counter()
    out = train_downstream(tuned, mix, work / "downstream", TrainConfig.from_config("sft", {**train,
                                                                                          "seed": cfg["seed"]}),
                           model_name=model_name)
    seconds = time.perf_counter() - start
    var = manifest.read(out)
    after, tok = load_variant(out)
    return after, tok, {"mix": str(mix.relative_to(ROOT)), "train_loss": var.params["train_loss"],
                        "n_rows": var.params["n_rows"], "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", type=int, help="indices into SETTINGS (default: all)")
    ap.add_argument("--plnd", nargs="+", default=[], metavar="KEY=VALUE",
                    help="re-detect the safety set with these plnd stage overrides (e.g. positions=document)")
    ap.add_argument("--index", help="tune this neuron index instead; 'every': every neuron (the sanity case)")
    ap.add_argument("--rsn", action="store_true", help="RSN-Tune: subtract the foundation set, as the rsntune rule")
    ap.add_argument("--sets", nargs="+", default=["harmful_test", "benign_test"], help="prepared datasets to score")
    ap.add_argument("--downstream", action="store_true",
                    help="then fine-tune on the NLSR p = 0 mix and score again (the RSN-Tune claim)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sntune_study.json"))
    args = ap.parse_args()

    from neuronkit import runtime
    from neuronkit.config import load_config_files, stage_params
    from neuronkit.data import read_table
    from neuronkit.generate import GenerationConfig
    from neuronkit.models import load_variant
    from neuronkit.neurons import NeuronIndex
    from neuronkit.sntune import SNTuneConfig, tune_model

    cfg = load_config_files([ROOT / "config.yaml"])
    runtime.setup(seed=cfg["seed"], threads=args.threads)
    configured = stage_params(cfg, args.model, "sntune")
    gen = GenerationConfig(seed=cfg["seed"], **stage_params(cfg, args.model, "generate"))
    data, results = ROOT / "results" / "data", ROOT / "results" / args.model
    base, parent = results / "checkpoints" / "base", results / "checkpoints" / configured["variant"]
    if args.index and args.plnd:
        raise SystemExit("--index and --plnd both name the neuron set; give one")
    index_path, foundation_path, plnd = neuron_sets(cfg, args.model, parse_overrides(args.plnd), args.rsn)
    if args.index:
        index_path = every_neuron_index(parent) if args.index == "every" else Path(args.index)
    index = NeuronIndex.read(index_path)
    foundation = NeuronIndex.read(foundation_path) if foundation_path else None
    sets = [data / f"{name}.parquet" for name in args.sets]
    missing = [str(p) for p in sets if not p.exists()]
    if missing:
        raise SystemExit(f"--sets: not prepared yet: {', '.join(missing)} (run snakemake for them first)")
    ppl_text = read_table(data / "benign_test.parquet").column("prompt").to_pylist()
    chosen = [SETTINGS[i] for i in args.settings] if args.settings else SETTINGS
    result = {"model": args.model, "machine": platform.platform(), "threads": args.threads,
              "configured": configured, "plnd": plnd, "plnd_overrides": args.plnd, "rsn": args.rsn,
              "index": str(index_path), "neurons": len(index),
              "foundation": str(foundation_path) if foundation_path else None, "sets": args.sets, "rows": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for label, overrides in chosen:
        params = {**configured, **overrides}
        scfg = SNTuneConfig.from_config(dict({k: v for k, v in params.items() if k not in STAGE_KEYS},
                                             seed=cfg["seed"]))
        benign = read_table(results / "self_answers" / f"{params['benign_dataset']}.parquet")
        model, tok = load_variant(parent)
        start = time.perf_counter()
        summary = tune_model(model, tok, index, read_table(data / f"{params['dataset']}.parquet"), scfg,
                             foundation=foundation, benign=benign, progress=False)
        tuned_seconds = time.perf_counter() - start
        figures = score(model, tok, sets, gen, cfg, base, ppl_text)
        row = {"setting": label, "overrides": overrides, "method": summary["method"], "steps": summary["steps"],
               "tuned_neurons": {m: sum(c) for m, c in summary["neurons"].items()},
               "n_docs": summary["n_docs"], "n_benign_docs": summary["n_benign_docs"],
               "trained_fraction": summary["trained_fraction"], "final_loss": summary["final_loss"],
               "n_massive_down_frozen": summary["n_massive_down_frozen"],
               "seconds_per_step": round(summary["seconds_per_step"], 2), "tune_seconds": round(tuned_seconds, 1),
               "figures": figures, "seconds": round(time.perf_counter() - start, 1)}
        if result["rows"]:  # each setting against the first, on the same prompts
            row["paired_vs_first"] = paired(result["rows"][0]["figures"], figures)
        if args.downstream:
            with tempfile.TemporaryDirectory() as work:
                after, tok_after, info = downstream(model, tok, cfg, args.model, Path(work))
                row["downstream"] = {**info, "figures": score(after, tok_after, sets, gen, cfg, base, ppl_text)}
            row["downstream"]["paired_vs_before"] = paired(figures, row["downstream"]["figures"])
        result["rows"].append(row)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # kept if a later setting fails
        brief = {k: v for k, v in figures.items() if not k.startswith(("examples", "flags", "n:"))}
        print(json.dumps({k: v for k, v in row.items() if k not in ("figures", "downstream")} | brief), flush=True)
        if args.downstream:
            after = row["downstream"]["figures"]
            print("downstream:", json.dumps({k: v for k, v in after.items()
                                             if not k.startswith(("examples", "flags", "n:"))}), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
