"""Two cold runs of the tiny DAG in two fresh copies write byte-identical artifacts (slow: two full runs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.test_workflow_tiny import HTML, TARGET, _copy_workflow, snakemake

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SKIPPED_DIRS = {"logs", "benchmarks"}  # wall-clock timings and log lines differ by nature


def artifact_digests(wf: Path) -> dict[str, str]:
    """sha256 of every file the run wrote under results/, logs and timings aside."""
    out = {}
    for f in sorted((wf / "results").rglob("*")):
        rel = f.relative_to(wf / "results")
        if f.is_file() and not SKIPPED_DIRS & set(rel.parts):
            out[rel.as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_two_cold_runs_write_identical_bytes(tmp_path):
    digests = []
    for name in ("one", "two"):
        wf = _copy_workflow(tmp_path / name)
        snakemake(wf, TARGET, HTML)
        digests.append(artifact_digests(wf))
    assert any(k.endswith("adapter_config.json") for k in digests[0])
    assert digests[0].keys() == digests[1].keys()
    differ = sorted(k for k in digests[0] if digests[0][k] != digests[1][k])
    assert not differ, f"{len(differ)} artifacts differ between identical cold runs: {differ[:20]}"
