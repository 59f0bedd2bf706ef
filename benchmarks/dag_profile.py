"""Where the time of a model's DAG goes: per rule, wall and CPU time, peak RSS, jobs, and tokens generated.

Run: .venv/bin/python benchmarks/dag_profile.py [--model smollm2]
Reads the per-job Snakemake benchmark files (results/<model>/benchmarks/**.tsv: s, max_rss, cpu_time, ...) of the
last run of each job, and counts the answer tokens of every generations file with the model's tokenizer. Writes
benchmarks/out/dag_profile_<model>.json and prints the rules by wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# benchmark path (relative to results/<model>/benchmarks) -> rule, for files not named after their rule's folder
RULE_OF_FOLDER = {"generate": "generate", "judge": "judge", "self_answers": "self_answers",
                  "patch_generate": "patch_generate", "deactivate_generate": "deactivate_generate",
                  "perplexity": "variant_perplexity", "attack": "attack", "nlsr": "nlsr", "attack_mix": "attack_mix"}


def rule_of(path: Path, bench_root: Path) -> str:
    """The rule a benchmark file belongs to: its first folder under benchmarks/, else its file stem."""
    rel = path.relative_to(bench_root)
    return RULE_OF_FOLDER.get(rel.parts[0], rel.parts[0]) if len(rel.parts) > 1 else rel.stem


def read_benchmark(path: Path) -> dict:
    """The last row of a Snakemake benchmark TSV (one row per repeat)."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    row = rows[-1]
    return {"s": float(row["s"]), "cpu_time": float(row.get("cpu_time") or 0.0),
            "max_rss_mb": float(row.get("max_rss") or 0.0)}


def answer_tokens(results: Path, tok) -> dict[str, int]:
    """Answer tokens per generations folder (variant), counted with the model's tokenizer."""
    from neuronkit.data import read_table

    out: dict[str, int] = defaultdict(int)
    for path in sorted((results / "generations").rglob("*.parquet")):
        answers = [a or "" for a in read_table(path).column("response").to_pylist()]
        out[path.parent.name] += sum(len(ids) for ids in tok(answers, add_special_tokens=False)["input_ids"])
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    results = ROOT / "results" / args.model
    bench_root = results / "benchmarks"
    per_rule: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0})
    for path in sorted(bench_root.rglob("*.tsv")):
        rule, row = rule_of(path, bench_root), read_benchmark(path)
        entry = per_rule[rule]
        entry["jobs"] += 1
        entry["wall_s"] += row["s"]
        entry["cpu_s"] += row["cpu_time"]
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], row["max_rss_mb"])
    tok = AutoTokenizer.from_pretrained(str(results / "checkpoints" / "base"))
    tokens = answer_tokens(results, tok)
    total = sum(e["wall_s"] for e in per_rule.values())
    rules = sorted(per_rule.items(), key=lambda kv: -kv[1]["wall_s"])
    result = {"model": args.model, "machine": platform.platform(), "total_job_wall_s": round(total, 1),
              "rules": {r: {k: round(v, 1) if isinstance(v, float) else v for k, v in e.items()}
                        | {"share": round(e["wall_s"] / total, 3) if total else None} for r, e in rules},
              "answer_tokens_by_variant": tokens, "answer_tokens_total": sum(tokens.values()),
              "note": "wall_s sums the jobs' own times; with --cores 2 two jobs may overlap, so the run's wall time "
                      "is lower than the sum (quote the run's elapsed time beside it)"}
    out = Path(args.out or ROOT / "benchmarks" / "out" / f"dag_profile_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'rule':28} {'jobs':>5} {'wall s':>9} {'cpu s':>9} {'peak MB':>8} {'share':>6}")
    for rule, e in rules:
        print(f"{rule:28} {e['jobs']:5d} {e['wall_s']:9.1f} {e['cpu_s']:9.1f} {e['peak_rss_mb']:8.0f} "
              f"{e['wall_s'] / total:6.1%}")
    print(f"total job time {total:.0f} s; answer tokens {sum(tokens.values())}; wrote {out}")


if __name__ == "__main__":
    main()
