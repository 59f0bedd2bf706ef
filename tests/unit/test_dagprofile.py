"""The DAG profile reads exactly the target DAG's jobs from a dry run and sums their benchmark rows per rule."""

from __future__ import annotations

import pytest

from neuronkit.dagprofile import markdown_table, planned_benchmarks, profile_jobs

DRY_RUN = """
[Thu Dec  3 11:10:42 2026]
rule generate:
    input: results/m/checkpoints/base, results/data/a.parquet
    output: results/m/generations/base/a.parquet
    log: results/m/logs/generate/base/a.log
    jobid: 3
    benchmark: results/m/benchmarks/generate/base/a.tsv
    reason: Forced execution
    wildcards: model=m, variant=base, dataset=a

localrule generate:
    output: results/m/generations/base/b.parquet
    benchmark: results/m/benchmarks/generate/base/b.tsv

rule report:
    input: results/m/sections/a.json
    output: results/m/report.json
    jobid: 0

checkpoint sft:
    output: results/m/checkpoints/sft
    benchmark: results/m/benchmarks/sft.tsv
"""

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, s, rss, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_the_dry_run_gives_every_job_with_its_benchmark_file():
    assert planned_benchmarks(DRY_RUN) == [
        ("generate", "results/m/benchmarks/generate/base/a.tsv"),
        ("generate", "results/m/benchmarks/generate/base/b.tsv"),
        ("report", None),
        ("sft", "results/m/benchmarks/sft.tsv"),
    ]


def test_rules_are_summed_over_the_planned_jobs_only_and_unrun_jobs_are_listed(tmp_path):
    _bench(tmp_path / "results/m/benchmarks/generate/base/a.tsv", 60.0, 1500.0, 100.0)
    _bench(tmp_path / "results/m/benchmarks/sft.tsv", 1200.0, 4096.0, 2300.0)
    _bench(tmp_path / "results/m/benchmarks/generate/old/c.tsv", 999.0, 9999.0, 999.0)  # not in this DAG
    prof = profile_jobs(planned_benchmarks(DRY_RUN), tmp_path)
    assert list(prof["rules"]) == ["sft", "generate"]  # largest wall time first
    assert prof["rules"]["generate"] == {"jobs": 1, "wall_s": 60.0, "cpu_s": 100.0, "peak_rss_mb": 1500.0,
                                         "share": pytest.approx(60 / 1260, abs=1e-3)}
    assert prof["jobs_run"] == 2 and prof["jobs_missing"] == ["results/m/benchmarks/generate/base/b.tsv"]
    assert prof["jobs_without_benchmark"] == {"report": 1}
    assert prof["total_job_wall_s"] == 1260.0 and prof["peak_rss_mb"] == 4096.0
    table = markdown_table(prof["rules"])
    assert "| sft | 1 | 20.0 | 95% | 38.3 | 4.0 |" in table and table.count("\n") == 3


def test_an_empty_benchmark_file_is_named(tmp_path):
    (tmp_path / "results/m/benchmarks").mkdir(parents=True)
    (tmp_path / "results/m/benchmarks/sft.tsv").write_text(HEADER)
    with pytest.raises(ValueError, match="sft.tsv: a benchmark file without a row"):
        profile_jobs([("sft", "results/m/benchmarks/sft.tsv")], tmp_path)
