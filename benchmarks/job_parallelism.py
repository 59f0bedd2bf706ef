"""Two 1-thread jobs at once, or one 2-thread job after another: which finishes a pair of workflow jobs sooner here?

Run: .venv/bin/python benchmarks/job_parallelism.py [--model smollm2] [--kinds generate judge sft] [--repeats 2]
Needs the base checkpoint and the prepared `harmful_test` set (and, for `sft`, the self answers the sft rule reads).

Each job is a fresh Python process doing what the workflow's job does, start-up included: `generate` answers the
100 `harmful_test` prompts with the configured decoding (`generate_file`), `judge` scores those answers
(`judge_file`, with the answers' perplexity under the base), `sft` trains the configured SFT for ``--sft-steps``
steps. For each kind, two jobs run one after the other with 2 threads each (what `--cores 2` and `threads: 2` do),
then both at once with 1 thread each (`threads: 1`), alternating ``--repeats`` times; the medians are compared, and
so are the artifacts a 1-thread and a 2-thread job write (answers, verdicts and perplexities, adapter weights).
Writes benchmarks/out/job_parallelism.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from statistics import median_high
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("generate", "judge", "sft")


def run_job(kind: str, model: str, threads: int, work: Path, sft_steps: int) -> None:
    """One workflow job's work in this process (the worker side)."""
    from neuronkit import runtime
    from neuronkit.config import load_config_files, stage_params

    cfg = load_config_files([ROOT / "config.yaml"])
    runtime.setup(seed=cfg["seed"], threads=threads)
    results = ROOT / "results" / model
    base = results / "checkpoints" / "base"
    answers = work / "answers.parquet"
    if kind == "generate":
        from neuronkit.generate import GenerationConfig, generate_file

        gen = GenerationConfig(seed=cfg["seed"], **stage_params(cfg, model, "generate"))
        prompts = ROOT / "results" / "data" / "harmful_test.parquet"
        generate_file(base, prompts, work / f"gen-t{threads}-{os.getpid()}.parquet", gen, variant="base")
    elif kind == "judge":
        from neuronkit.judge import judge_file

        judge_file(answers, work / f"judge-t{threads}-{os.getpid()}.parquet", cfg["judge"], base_ckpt=base)
    else:
        from neuronkit.alignment_data import AlignmentDataConfig
        from neuronkit.judge import refusal_judge_from_config
        from neuronkit.tune import TrainConfig, align_sft

        data_cfg = AlignmentDataConfig.from_config(cfg["alignment"])
        files = {d: str(results / "self_answers" / f"{d}.parquet") for d in data_cfg.datasets()}
        train = TrainConfig.from_config("sft", {**stage_params(cfg, model, "sft"), "seed": cfg["seed"],
                                                "max_steps": sft_steps})
        judge = refusal_judge_from_config(cfg["judge"])
        align_sft(base, files, work / f"sft-t{threads}-{os.getpid()}", train, data_cfg, judge, model_name=model)


def same_outputs(kind: str, work: Path) -> dict:
    """Do the 1-thread and the 2-thread jobs write the same artifact? (Thread counts change float summation order.)"""
    one, two = (sorted(work.glob(f"{'gen' if kind == 'generate' else kind}-t{t}-*"))[0] for t in (1, 2))
    if kind == "sft":
        from safetensors.torch import load_file

        a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (one, two))
        return {"adapter_max_abs_difference": max(float((a[k] - b[k]).abs().max()) for k in a),
                "adapter_max_abs_value": max(float(a[k].abs().max()) for k in a)}
    from neuronkit.data import read_table

    a, b = read_table(one).to_pydict(), read_table(two).to_pydict()
    out = {"rows": len(a["response"]),
           "identical_answers": sum(x == y for x, y in zip(a["response"], b["response"], strict=True))}
    if kind == "judge":
        out["identical_verdicts"] = sum(x == y for x, y in zip(a["verdict"], b["verdict"], strict=True))
        out["answer_perplexity_max_relative_difference"] = max(
            abs(x - y) / abs(y) for x, y in zip(a["answer_perplexity"], b["answer_perplexity"], strict=True)
            if x == x and y == y)
    return out


def spawn(kind: str, args, threads: int, work: Path) -> subprocess.Popen:
    """A worker process for one job."""
    cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(threads), "--model", args.model,
           "--work", str(work), "--sft-steps", str(args.sft_steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wall_of_pair(kind: str, args, work: Path, together: bool) -> float:
    """Seconds until both of two identical jobs are done: 1 thread each at once, or 2 threads each in turn."""
    start = time.perf_counter()
    if together:
        jobs = [spawn(kind, args, 1, work) for _ in range(2)]
        codes = [j.wait() for j in jobs]
    else:
        codes = [spawn(kind, args, 2, work).wait() for _ in range(2)]
    if any(codes):
        raise SystemExit(f"a {kind} job failed (exit codes {codes}); run it with --worker {kind} to see why")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sft-steps", type=int, default=6)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "job_parallelism.json"))
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_job(args.worker, args.model, args.threads, Path(args.work), args.sft_steps)
        return
    result = {"model": args.model, "machine": platform.platform(), "cpus": os.cpu_count(), "repeats": args.repeats,
              "sft_steps": args.sft_steps, "kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "judge" in args.kinds:  # the judge scores real answers: write them once, outside the timing
            run_job("generate", args.model, 2, work, args.sft_steps)
            next(work.glob("gen-t2-*.parquet")).rename(work / "answers.parquet")
        for kind in args.kinds:
            walls: dict[str, list[float]] = {"in_turn_2_threads": [], "together_1_thread": []}
            for _ in range(args.repeats):
                walls["in_turn_2_threads"].append(wall_of_pair(kind, args, work, together=False))
                walls["together_1_thread"].append(wall_of_pair(kind, args, work, together=True))
            row = {name: round(median_high(v), 2) for name, v in walls.items()}
            row["runs"] = walls
            row["together_vs_in_turn"] = round(row["together_1_thread"] / row["in_turn_2_threads"], 3)
            row["one_vs_two_threads"] = same_outputs(kind, work)
            result["kinds"][kind] = row
            print(json.dumps({kind: row}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
