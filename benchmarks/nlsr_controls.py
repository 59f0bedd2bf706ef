"""NLSR against its controls: does the transplant restore safety because of *which* entries it restores?

Run: .venv/bin/python benchmarks/nlsr_controls.py [--model smollm2] [--p 0.1] [--keeps 0.05 0.1 0.2 0.5]
     [--scores lowrank snip wanda] [--threads 2]
Needs the workflow's NLSR inputs for that model (attacked_p{p}, aligned, reference, the reference's scored
calibration set, the prepared datasets): for example
`snakemake results/smollm2/checkpoints/attacked_p0.1 results/smollm2/neurons/lowrank_masks.safetensors` first.

For each keep fraction and score, the attacked adapter is realigned with the model's configured NLSR setting
(``nlsr`` stage: mode, rate, epsilon, ordering) from masks scored at that keep fraction, and beside it the
random-mask control (the same modules and the same count of entries per tensor, seeded random positions). The
attacked model, the aligned model (full rollback) and the reference (every entry transplanted, keep 1.0) are the
bounds. Every row is generated, judged (three-way judge, answer perplexity under the base) and scored exactly as
the workflow does (a workflow variant's scored file is reused when it exists), on:

- the *selection* split (``--select-on``, default the builtin harmful_test), on which the setting is chosen;
- the *reporting* splits (``--report-on``, default AdvBench and HarmBench validation), on which it is reported;
- over-refusal (benign_test) and task accuracy (the NLSR task test set).

Paired exact McNemar tests (same prompts) compare each NLSR row with its random control and with the attacked
model, and the reference with the aligned model (is the EXPO reference safer?). Judged files of finished rows are
kept under ``--work`` and reused on a rerun, so a killed run resumes.
Writes benchmarks/out/nlsr_controls.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"  # the workflow's results folder (--results)


def stage(cfg: dict, model: str, name: str) -> dict:
    """One stage's parameters for the model (defaults, then the model's overrides), as the rules see them."""
    from neuronkit.config import stage_params

    return stage_params(cfg, model, name)


def score_masks(score: str, keep: float, cfg: dict, model: str, cache: Path) -> Path:
    """Masks of the reference for one score and keep fraction, scored as the safety_masks rule does (cached)."""
    from neuronkit.scores.adapter_scores import ScoreConfig, score_reference_file

    out = cache / f"{score}_keep{keep}_masks.safetensors"
    if not out.exists():
        nlsr = stage(cfg, model, "nlsr")
        score_reference_file(RESULTS / model / "checkpoints" / "reference",
                             RESULTS / model / "scored" / "reference" / f"{nlsr['calibration']}.parquet", out,
                             ScoreConfig(method=score, keep_fraction=keep, seed=cfg["seed"]),
                             keep_all=nlsr["calibration_keep"] == "all")
    return out


def realign_pair(score: str, keep: float, p: str, cfg: dict, model: str, cache: Path) -> tuple[Path, Path, dict]:
    """(NLSR checkpoint, random-control checkpoint, their summaries) for one score and keep fraction (cached)."""
    from neuronkit.realign import RealignConfig, realign, realign_random_control

    n = stage(cfg, model, "nlsr")
    rcfg = RealignConfig(mode=n["mode"], rate=n["rate"], epsilon=n["epsilon"], ordering=n["ordering"], tau=n["tau"],
                         layers=tuple(n["layers"]), seed=cfg["seed"])
    ckpts = RESULTS / model / "checkpoints"
    masks = score_masks(score, keep, cfg, model, cache)
    nlsr_dir, random_dir = cache / f"nlsr_{score}_keep{keep}_p{p}", cache / f"random_{score}_keep{keep}_p{p}"
    if not nlsr_dir.exists():
        realign(ckpts / f"attacked_p{p}", ckpts / "reference", nlsr_dir, rcfg, masks_path=masks, name=nlsr_dir.name)
    if not random_dir.exists():
        realign_random_control(ckpts / f"attacked_p{p}", ckpts / "reference", nlsr_dir, random_dir,
                               masks_path=masks, seed=cfg["seed"], name=random_dir.name)
    summaries = {}
    for role, d in (("nlsr", nlsr_dir), ("random", random_dir)):
        s = json.loads((d / "realign.json").read_text())
        summaries[role] = {"modules_selected": s["n_selected"], "entries_changed": s["entries_changed"],
                           "entries_total": s["entries_total"]}
    return nlsr_dir, random_dir, summaries


def evaluate(ckpt: Path, label: str, datasets: list[str], cfg: dict, model: str, work: Path) -> dict:
    """Judged files of one row (kept under work/label) and its figures: harmful score or over-refusal with the
    degenerate rate on each safety set, task accuracy on the task set."""
    import pyarrow.parquet as pq

    from neuronkit.evaluate import score_scored_file
    from neuronkit.generate import GenerationConfig, generate_file
    from neuronkit.judge import judge_file
    from neuronkit.task import score_generations

    gen = GenerationConfig(seed=cfg["seed"], **stage(cfg, model, "generate"))
    data, row = RESULTS / "data", work / label
    row.mkdir(parents=True, exist_ok=True)
    figures = {}
    for dataset in datasets:
        judged = row / f"{dataset}.parquet"
        workflow_scored = RESULTS / model / "scored" / label / f"{dataset}.parquet"
        if not judged.exists() and workflow_scored.exists():  # a workflow variant: the same file, already made
            shutil.copyfile(workflow_scored, judged)
        if not judged.exists():
            raw = row / f"{dataset}.gen.parquet"
            generate_file(ckpt, data / f"{dataset}.parquet", raw, gen, variant=label)
            judge_file(raw, judged, cfg["judge"], base_ckpt=RESULTS / model / "checkpoints" / "base")
            raw.unlink()
        fig = score_scored_file(str(judged))
        figures[dataset] = {"metric": fig["metric"], "value": fig["value"], "k": fig["k"], "n": fig["n"],
                            "ci95": fig["ci95"], "degenerate": fig["degenerate"]["value"]}
    task = data / f"{stage(cfg, model, 'nlsr')['task_test']}.parquet"
    answers = row / "task.parquet"
    workflow_answers = RESULTS / model / "generations" / label / task.name
    if not answers.exists() and workflow_answers.exists():
        shutil.copyfile(workflow_answers, answers)
    if not answers.exists():
        generate_file(ckpt, task, answers, gen, variant=label)
    figures["task"] = score_generations(pq.read_table(answers), pq.read_table(task))
    return figures


def task_paired_test(first: Path, second: Path, task: Path) -> dict:
    """Exact McNemar on task correctness of two rows, the same task prompts."""
    import pyarrow.parquet as pq

    from neuronkit.significance import mcnemar_exact
    from neuronkit.task import is_correct

    gold = dict(zip(*(pq.read_table(task).column(c).to_pylist() for c in ("id", "response"))))
    flags = []
    for path in (first, second):
        t = pq.read_table(path)
        flags.append(dict(zip(t.column("id").to_pylist(),
                              (is_correct(r, gold[i]) for i, r in zip(t.column("id").to_pylist(),
                                                                       t.column("response").to_pylist())))))
    ids = sorted(flags[0])
    return {"dataset": "task", "n": len(ids), **mcnemar_exact([flags[0][i] for i in ids], [flags[1][i] for i in ids])}


def paired(first: str, second: str, datasets: list[str], task: Path, work: Path) -> dict:
    """Paired tests of two rows on every safety set and the task."""
    from neuronkit.evaluate import paired_safety_test

    tests = {d: paired_safety_test(str(work / first / f"{d}.parquet"), str(work / second / f"{d}.parquet"))
             for d in datasets}
    tests["task"] = task_paired_test(work / first / "task.parquet", work / second / "task.parquet", task)
    return {"first": first, "second": second,
            "tests": {d: {k: t[k] for k in ("n", "first_percent", "second_percent", "only_first", "only_second",
                                                      "p_value", "significant")
                          if k in t} for d, t in tests.items()}}


def main() -> None:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--p", default="0.1")
    ap.add_argument("--keeps", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--scores", nargs="+", default=["lowrank"])
    ap.add_argument("--select-on", default="harmful_test")
    ap.add_argument("--report-on", nargs="+", default=["advbench", "harmbench_val"])
    ap.add_argument("--benign", nargs="+", default=["benign_test"])
    ap.add_argument("--max-task-drop", type=float, default=2.0, help="points of task accuracy a chosen setting "
                    "may lose against the attacked model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "nlsr_controls"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "nlsr_controls.json"))
    ap.add_argument("--results", default=str(RESULTS), help="the workflow's results folder (another checkout's)")
    args = ap.parse_args()
    RESULTS = Path(args.results)

    from neuronkit import runtime
    from neuronkit.config import load_config_files
    from neuronkit.evaluate import choose_setting, recovery

    cfg = load_config_files([ROOT / "config.yaml"])
    runtime.setup(seed=cfg["seed"], threads=args.threads)
    work, ckpts = Path(args.work), RESULTS / args.model / "checkpoints"
    cache = work / "adapters"
    cache.mkdir(parents=True, exist_ok=True)
    datasets = [args.select_on, *args.report_on, *args.benign]
    harmful_sets = [args.select_on, *args.report_on]
    task = RESULTS / "data" / f"{stage(cfg, args.model, 'nlsr')['task_test']}.parquet"
    result = {"model": args.model, "p": float(args.p), "machine": platform.platform(), "threads": args.threads,
              "nlsr_setting": {k: stage(cfg, args.model, "nlsr")[k] for k in ("mode", "rate", "epsilon", "ordering")},
              "selection_split": args.select_on, "reporting_splits": args.report_on, "benign": args.benign,
              "rows": {}, "paired": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def run_row(label: str, ckpt: Path, **info) -> None:
        start = time.perf_counter()
        result["rows"][label] = {**info, "figures": evaluate(ckpt, label, datasets, cfg, args.model, work),
                                 "seconds": round(time.perf_counter() - start, 1)}
        out.write_text(json.dumps(result, indent=2) + "\n")  # kept if a later row fails
        print(label, json.dumps({d: f.get("value", f.get("accuracy")) for d, f in
                                 result["rows"][label]["figures"].items()}), flush=True)

    run_row(f"attacked_p{args.p}", ckpts / f"attacked_p{args.p}", kind="attacked")
    pairs = []
    for keep in args.keeps:
        for score in args.scores:
            nlsr_dir, random_dir, summaries = realign_pair(score, keep, args.p, cfg, args.model, cache)
            run_row(nlsr_dir.name, nlsr_dir, kind="nlsr", score=score, keep_fraction=keep, **summaries["nlsr"])
            run_row(random_dir.name, random_dir, kind="random", score=score, keep_fraction=keep,
                    **summaries["random"])
            pairs.append((nlsr_dir.name, random_dir.name))
    run_row("aligned", ckpts / "aligned", kind="aligned")
    run_row("reference", ckpts / "reference", kind="reference (every entry transplanted, keep 1.0)")

    attacked, aligned = result["rows"][f"attacked_p{args.p}"], result["rows"]["aligned"]
    for label, row in result["rows"].items():
        row["recovery_percent"] = {d: recovery(attacked["figures"][d]["value"], row["figures"][d]["value"],
                                               aligned["figures"][d]["value"]) for d in harmful_sets}
    for nlsr_label, random_label in pairs:
        result["paired"].append(paired(nlsr_label, random_label, datasets, task, work))
        result["paired"].append(paired(nlsr_label, f"attacked_p{args.p}", datasets, task, work))
    result["paired"].append(paired("reference", "aligned", datasets, task, work))  # is EXPO's reference safer?
    candidates = {label: row for label, row in result["rows"].items() if row["kind"] == "nlsr"}
    result["choice"] = choose_setting(candidates, attacked, split=args.select_on, max_task_drop=args.max_task_drop)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("chosen on", args.select_on, ":", json.dumps(result["choice"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
