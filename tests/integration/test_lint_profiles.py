"""Workflow hygiene: `snakemake --lint` finds nothing, snakefmt leaves the rules unchanged, and the SLURM profile
asks for GPUs exactly on the GPU rules."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_workflow_tiny import _copy_workflow

REPO = Path(__file__).resolve().parents[2]
# judge loads the intact base model to score each answer's perplexity (the degenerate verdict)
GPU_RULES = {"self_answers", "sft", "preference", "generate", "judge", "contrast", "safeguard", "patch_generate",
             "patch_perplexity", "plnd", "deactivation_control", "deactivate_generate", "deactivation_perplexity",
             "sntune", "variant_perplexity", "attack", "safety_masks", "general"}

_spec = importlib.util.spec_from_file_location("resource_table", REPO / "tools" / "resource_table.py")
resource_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(resource_table)

pytestmark = pytest.mark.e2e


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_lint_finds_nothing():
    proc = _run("snakemake", "--lint", "json", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "", f"lints:\n{proc.stdout[:4000]}"
    assert "good condition" in proc.stderr


def test_snakefmt_leaves_rules_unchanged():
    proc = _run("snakefmt", "--check", "--diff", ".", cwd=REPO)
    assert proc.returncode == 0, f"run `snakefmt .`:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
    assert re.search(r"All (\d+) file\(s\) would be left unchanged", proc.stderr + proc.stdout)


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory) -> dict[str, list[str]]:
    """Rule -> the resources lines of a SLURM-profile dry run of the llama3 report (nothing is submitted)."""
    wf = _copy_workflow(tmp_path_factory.mktemp("slurm_dry"))
    proc = _run("snakemake", "-n", "--profile", "profiles/slurm", "results/llama3/report.json", cwd=wf)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return resource_table.jobs_by_rule(proc.stdout)


def test_slurm_profile_requests_gpus_on_gpu_rules(slurm_dry_run):
    assert GPU_RULES <= set(slurm_dry_run), sorted(GPU_RULES - set(slurm_dry_run))
    for rule in GPU_RULES:
        for line in slurm_dry_run[rule]:
            # llama3: models.llama3.resources (gpu 1, 64 GB, 8 h) and threads 8 -> cpus_per_task 8
            assert "gpu=1" in line and "mem_mb=64000" in line and "runtime=480" in line, (rule, line)
            assert "cpus_per_task=8" in line, (rule, line)


def test_slurm_profile_keeps_gpus_off_cpu_rules(slurm_dry_run):
    for rule in set(slurm_dry_run) - GPU_RULES:
        assert all("gpu=" not in line for line in slurm_dry_run[rule]), (rule, slurm_dry_run[rule])


def test_readme_shows_the_resources_this_dry_run_requests(slurm_dry_run):
    """The README's per-rule table is what tools/resource_table.py makes of this very dry run."""
    made = resource_table.table(slurm_dry_run, resource_table.local_rules(REPO))
    readme = (REPO / "README.md").read_text()
    assert made in readme, f"update the README's table (python tools/resource_table.py):\n{made}"


# forward-only rules: the same bits at any thread count, so they take models.<model>.inference_threads
INFERENCE_RULES = {"self_answers", "generate", "judge", "variant_perplexity", "contrast", "patch_generate",
                   "patch_perplexity", "deactivate_generate", "deactivation_perplexity"}


def test_forward_only_jobs_take_the_inference_threads_and_training_jobs_the_threads(tmp_path):
    """smollm2 (threads 2, inference_threads 1): two forward-only jobs share the 2 cores; training keeps both."""
    wf = _copy_workflow(tmp_path)
    proc = _run("snakemake", "-n", "--cores", "2", "results/smollm2/report.json", cwd=wf)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = resource_table.jobs_by_rule(proc.stdout)
    assert INFERENCE_RULES <= set(jobs), sorted(INFERENCE_RULES - set(jobs))
    for rule, lines in jobs.items():
        want = 1 if rule in INFERENCE_RULES else 2
        for line in lines:
            if "cpus_per_task=" in line:
                assert f"cpus_per_task={want}," in line, (rule, line)
    assert all("cpus_per_task=2," in line for rule in ("sft", "preference", "sntune", "attack") for line in jobs[rule])
