"""Print the per-rule resources that a SLURM-profile dry run requests, as the README's Markdown table.

The table is read from the dry run itself (each job's ``resources:`` line) and from the rules' ``localrule: True``,
so it cannot drift from what the profile submits; a test checks that the README holds exactly this table.

    python tools/resource_table.py                       # results/llama3/report.json
    python tools/resource_table.py results/smollm2/report.json
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("gpu", "mem_mb", "runtime", "cpus_per_task")


def dry_run(target: str, cwd: Path = REPO) -> str:
    """The stdout of ``snakemake -n --profile profiles/slurm <target>`` (nothing is submitted)."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", target], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def jobs_by_rule(text: str) -> dict[str, list[str]]:
    """Rule -> the ``resources:`` line of each of its jobs in a dry run's output."""
    found: dict[str, list[str]] = {}
    for block in re.split(r"^(?:local)?rule ", text, flags=re.M)[1:]:
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        found.setdefault(block.split(":", 1)[0], []).append(res.group(1) if res else "")
    return found


def local_rules(repo: Path = REPO) -> set[str]:
    """Rules marked ``localrule: True``: the SLURM executor runs them on the submitting host."""
    out = set()
    for smk in sorted((repo / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            if re.search(r"^\s+localrule: True", body, re.M):
                out.add(name)
    return out


def _values(lines: list[str], key: str) -> str:
    """The distinct values one resource takes over a rule's jobs ("" when never requested)."""
    seen = dict.fromkeys(m.group(1) for line in lines if (m := re.search(rf"\b{key}=([^,\s]+)", line)))
    return " / ".join(seen) or "-"


def table(found: dict[str, list[str]], local: set[str]) -> str:
    """The Markdown table: GPU jobs, then other SLURM jobs, then local rules, each by name."""
    def order(rule: str) -> tuple:
        return rule in local, _values(found[rule], "gpu") == "-", rule

    rows = ["| rule | jobs | gpu | mem_mb | runtime (min) | cpus_per_task | runs on |", "|---|---|---|---|---|---|---|"]
    for rule in sorted(found, key=order):
        where = "submit host (local rule)" if rule in local else "SLURM job"
        cells = [rule, str(len(found[rule])), *(_values(found[rule], c) for c in COLUMNS), where]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(jobs_by_rule(dry_run(sys.argv[1] if len(sys.argv) > 1 else "results/llama3/report.json")),
                local_rules()))
