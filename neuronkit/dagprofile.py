"""Where a DAG's time goes: every job of a target's DAG, its Snakemake benchmark row, summed per rule.

The jobs come from a forced dry run of the target (``snakemake -n -F``), so a results folder that also holds
benchmark files of other runs (an old k, another config) is profiled for exactly this DAG; a job whose benchmark
file is absent has not run yet and is listed, not guessed.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

RULE_LINE = re.compile(r"^(?:local)?(?:checkpoint|rule) (\w+):\s*$")
BENCHMARK_LINE = re.compile(r"^\s+benchmark: (\S+)\s*$")


def planned_benchmarks(dry_run_text: str) -> list[tuple[str, str | None]]:
    """(rule, benchmark path or None) for every job a dry run prints, in its order."""
    jobs: list[list] = []
    for line in dry_run_text.splitlines():
        if m := RULE_LINE.match(line):
            jobs.append([m.group(1), None])
        elif (m := BENCHMARK_LINE.match(line)) and jobs and jobs[-1][1] is None:
            jobs[-1][1] = m.group(1)
    return [(rule, path) for rule, path in jobs]


def read_benchmark(path: Path) -> dict:
    """The last row of a Snakemake benchmark TSV (one row per repeat): wall s, CPU s, peak RSS in MB."""
    with Path(path).open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: a benchmark file without a row")
    row = rows[-1]
    return {"s": float(row["s"]), "cpu_time": float(row.get("cpu_time") or 0.0),
            "max_rss_mb": float(row.get("max_rss") or 0.0)}


def profile_jobs(jobs: Iterable[tuple[str, str | None]], root: Path) -> dict:
    """Per rule: jobs run, summed wall and CPU seconds, the largest peak RSS, share of the summed wall time."""
    per_rule: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0})
    missing: list[str] = []
    unmeasured: dict[str, int] = defaultdict(int)
    for rule, rel in jobs:
        if rel is None:
            unmeasured[rule] += 1
            continue
        path = Path(root) / rel
        if not path.exists():
            missing.append(rel)
            continue
        row, entry = read_benchmark(path), per_rule[rule]
        entry["jobs"] += 1
        entry["wall_s"] += row["s"]
        entry["cpu_s"] += row["cpu_time"]
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], row["max_rss_mb"])
    total = sum(e["wall_s"] for e in per_rule.values())
    rules = {r: {k: round(v, 1) if isinstance(v, float) else v for k, v in e.items()}
             | {"share": round(e["wall_s"] / total, 3) if total else None}
             for r, e in sorted(per_rule.items(), key=lambda kv: -kv[1]["wall_s"])}
    return {"jobs_run": sum(e["jobs"] for e in per_rule.values()), "jobs_missing": missing,
            "jobs_without_benchmark": dict(unmeasured),
            "total_job_wall_s": round(total, 1), "total_job_cpu_s": round(sum(e["cpu_s"] for e in per_rule.values()), 1),
            "peak_rss_mb": round(max((e["peak_rss_mb"] for e in per_rule.values()), default=0.0), 1), "rules": rules}


def markdown_table(rules: dict, top: int | None = None) -> str:
    """The README's 'where the time goes' table: rule, jobs, minutes, share, CPU minutes, peak RSS."""
    lines = ["| rule | jobs | wall (min) | share | CPU (min) | peak RSS (GB) |", "|---|---|---|---|---|---|"]
    for rule, e in list(rules.items())[:top]:
        lines.append(f"| {rule} | {e['jobs']} | {e['wall_s'] / 60:.1f} | {e['share']:.0%} | {e['cpu_s'] / 60:.1f} | "
                     f"{e['peak_rss_mb'] / 1024:.1f} |")
    return "\n".join(lines)


def dry_run_command(snakemake: str, targets: Sequence[str], configfiles: Sequence[str] = ()) -> list[str]:
    """A forced dry run that prints every job of the targets' DAG (with its benchmark path)."""
    cmd = [snakemake, "-n", "-F", "--profile", "profiles/default", *targets]
    return cmd + (["--configfile", *configfiles] if configfiles else [])
