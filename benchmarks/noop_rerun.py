"""No-op reruns: how long Snakemake takes to find that a built DAG has nothing to do (a second `make run`).

Run: .venv/bin/python benchmarks/noop_rerun.py [--model tiny] [--workdir DIR] [--runs 5]
Without --workdir the committed workflow (`git archive HEAD`) is unpacked into a temporary folder and the model's
report.json + report.html are built there first (the tiny model with tests/integration/tiny.yaml: about 10 min on 2
cores). Then, alternating, N runs each of: the interpreter start with Snakemake's import (the floor every run
pays), `snakemake -n` of the built targets, and a real `snakemake` of them (what a second `make run` does). Both
must report nothing to do, or the benchmark stops and names the jobs. Planning = median run - median floor.
Writes benchmarks/out/noop_rerun_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuronkit.dagprofile import dry_run_command, planned_benchmarks  # noqa: E402

FLOOR = [sys.executable, "-c", "import snakemake.cli"]


def unpack_committed_workflow(dest: Path) -> Path:
    """The workflow as committed (no results, no caches), where a build cannot touch this checkout's results."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def snakemake_cmd(args: list[str], configfiles: list[str]) -> list[str]:
    """This interpreter's Snakemake with the default profile, as `make run` calls it."""
    return [sys.executable, "-m", "snakemake", "--profile", "profiles/default", "--cores", "2", *args,
            "--configfile", *configfiles]


def timed(cmd: list[str], wf: Path, env: dict) -> tuple[float, str]:
    """Wall seconds of one command, and what it printed; a failure is raised with its output."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--workdir", help="a workflow folder whose targets are built (default: build a fresh copy)")
    ap.add_argument("--configfile", nargs="*", help="default: config.yaml, plus tests/integration/tiny.yaml for tiny")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    configfiles = args.configfile or ["config.yaml"] + (["tests/integration/tiny.yaml"] if args.model == "tiny" else [])
    targets = [f"results/{args.model}/report.json", f"results/{args.model}/report.html"]
    keep = tempfile.TemporaryDirectory() if args.workdir is None else None
    wf = Path(args.workdir) if args.workdir else unpack_committed_workflow(Path(keep.name))
    env = {**os.environ, "PYTHONPATH": str(wf), "HF_HUB_OFFLINE": "1"}
    result: dict = {"model": args.model, "targets": targets, "configfiles": configfiles, "runs": args.runs,
                    "machine": platform.platform(), "cpus": os.cpu_count()}
    if keep is not None:
        result["build_s"], _ = timed(snakemake_cmd(targets, configfiles), wf, env)
        print(f"built {targets} in {result['build_s']:.0f} s")
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    _, forced = timed(dry_run_command(snakemake, targets, configfiles), wf, env)
    result["jobs"] = len(planned_benchmarks(forced))
    samples: dict[str, list[float]] = {"floor": [], "dry_run": [], "run": []}
    commands = {"floor": FLOOR, "dry_run": snakemake_cmd(["-n", *targets], configfiles),
                "run": snakemake_cmd(targets, configfiles)}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            wall, text = timed(cmd, wf, env)
            if name != "floor" and "Nothing to be done" not in text:
                raise SystemExit(f"not a no-op: {' '.join(cmd)} planned jobs:\n{text[-3000:]}")
            samples[name].append(round(wall, 3))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    result |= {"seconds": samples, "median_s": medians,
               "planning_s": {name: round(medians[name] - medians["floor"], 3) for name in ("dry_run", "run")}}
    out = Path(args.out or ROOT / "benchmarks" / "out" / f"noop_rerun_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['jobs']} jobs; floor {medians['floor']:.2f} s; no-op dry run {medians['dry_run']:.2f} s, "
          f"no-op run {medians['run']:.2f} s (planning {result['planning_s']['dry_run']:.2f} / "
          f"{result['planning_s']['run']:.2f} s); wrote {out}")


if __name__ == "__main__":
    main()
