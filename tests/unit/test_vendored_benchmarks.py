"""The vendored public benchmarks are the upstream files, carry their licences, and load through the config."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml

from neuronkit.data import DatasetSpec, check_source, load_dataset

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "data" / "benchmarks"
LICENCES = {"advbench.csv": "AdvBench-MIT.txt", "harmbench_val.csv": "HarmBench-MIT.txt",
            "xstest_prompts.csv": "XSTest-CC-BY-4.0.txt", "mmlu_slice.jsonl": "MMLU-MIT.txt"}
# Rows each configured benchmark must have: the public sets' sizes, or the n the config asks for.
EXPECTED_ROWS = {"advbench": 100, "harmbench_val": 41, "xstest_safe": 250, "xstest_unsafe": 100}


def _readme_hashes() -> dict[str, str]:
    text = (BENCH / "README.md").read_text()
    return dict(re.findall(r"^\| `([\w.]+\.(?:csv|jsonl))` .*\| `([0-9a-f]{64})` \|$", text, re.M))


def test_every_vendored_file_matches_the_sha256_in_its_readme():
    hashes = _readme_hashes()
    assert set(hashes) == set(LICENCES) == {p.name for p in [*BENCH.glob("*.csv"), *BENCH.glob("*.jsonl")]}
    for name, digest in hashes.items():
        assert hashlib.sha256((BENCH / name).read_bytes()).hexdigest() == digest, name


def test_every_vendored_file_has_its_licence_and_no_non_commercial_set_is_vendored():
    for name, licence in LICENCES.items():
        assert (BENCH / "licenses" / licence).stat().st_size > 500, licence
    text = (BENCH / "licenses" / "XSTest-CC-BY-4.0.txt").read_text()
    assert "Attribution 4.0 International" in text
    vendored = {p.name.lower() for p in REPO.rglob("*") if p.suffix in (".csv", ".json", ".jsonl", ".parquet")
                and ".venv" not in p.parts and "results" not in p.parts}
    assert not [n for n in vendored if any(k in n for k in ("alpaca", "beaver", "pku", "saferlhf", "safety_only"))]


@pytest.mark.parametrize("name,rows", sorted(EXPECTED_ROWS.items()))
def test_the_default_config_scores_each_public_benchmark_from_the_vendored_file(name, rows):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    spec = DatasetSpec.from_config(name, config["datasets"][name])
    assert spec.source.startswith("data/benchmarks/")
    check_source(spec, REPO)
    table = load_dataset(spec, base_dir=REPO)
    assert table.num_rows == rows
    assert all(p and p.strip() for p in table.column("prompt").to_pylist())
    evaluated = config["evaluation"]["harmful"] + config["evaluation"]["benign"]
    assert name in evaluated


def test_the_mmlu_slice_is_five_questions_of_every_subject_in_lm_evals_fields():
    import json
    from collections import Counter

    rows = [json.loads(line) for line in (BENCH / "mmlu_slice.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 285 and len({r["id"] for r in rows}) == 285
    assert set(Counter(r["subject"] for r in rows).values()) == {5} and len({r["subject"] for r in rows}) == 57
    assert all(len(r["choices"]) == 4 and r["answer"] in range(4) and r["question"].strip() for r in rows)
    assert (BENCH / "licenses" / "MMLU-MIT.txt").read_text().startswith("MIT License")
