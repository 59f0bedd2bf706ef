"""Where the time of a model's DAG goes: per rule, wall and CPU time, peak RSS, jobs, and tokens generated.

Run: .venv/bin/python benchmarks/dag_profile.py [--model smollm2] [--configfile config.yaml extra.yaml]
Lists the jobs of results/<model>/report.json and report.html with a forced dry run, reads each job's Snakemake
benchmark file (the last run of each job; a job not run yet is listed as missing), and counts the answer tokens of
every generations file of the DAG with the model's tokenizer. Writes benchmarks/out/dag_profile_<model>.json and
prints the README's table (neuronkit.dagprofile).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuronkit.dagprofile import dry_run_command, markdown_table, planned_benchmarks, profile_jobs  # noqa: E402


def answer_tokens(results: Path, planned: str, tok) -> dict[str, int]:
    """Answer tokens per generations folder (variant) over the DAG's generations files."""
    from neuronkit.data import read_table

    out: dict[str, int] = defaultdict(int)
    for path in sorted((results / "generations").rglob("*.parquet")):
        if str(path.relative_to(ROOT)) not in planned:
            continue
        answers = [a or "" for a in read_table(path).column("response").to_pylist()]
        out[path.parent.name] += sum(len(ids) for ids in tok(answers, add_special_tokens=False)["input_ids"])
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--configfile", nargs="*", default=[])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    results = ROOT / "results" / args.model
    targets = [f"results/{args.model}/report.json", f"results/{args.model}/report.html"]
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    dry = subprocess.run(dry_run_command(snakemake, targets, args.configfile), cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    jobs = planned_benchmarks(dry)
    prof = profile_jobs(jobs, ROOT)
    tok = AutoTokenizer.from_pretrained(str(results / "checkpoints" / "base"))
    tokens = answer_tokens(results, dry, tok)
    result = {"model": args.model, "targets": targets, "configfiles": args.configfile,
              "machine": platform.platform(), "jobs_planned": len(jobs)} | prof | {
              "answer_tokens_by_variant": tokens, "answer_tokens_total": sum(tokens.values()),
              "note": "wall_s sums the jobs' own times; with --cores 2 two jobs may overlap, so the run's wall time "
                      "is lower than the sum (quote the run's elapsed time beside it)"}
    out = Path(args.out or ROOT / "benchmarks" / "out" / f"dag_profile_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(prof["rules"]))
    print(f"{len(jobs)} jobs planned, {prof['jobs_run']} measured, {len(prof['jobs_missing'])} not run yet; "
          f"summed job time {prof['total_job_wall_s'] / 60:.1f} min; answer tokens {sum(tokens.values())}; wrote {out}")


if __name__ == "__main__":
    main()
