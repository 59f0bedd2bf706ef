"""The tiny DAG through `--profile profiles/slurm` on a real single-node SLURM (slurm-wlm from Debian, no accounting).

The cluster (tests/integration/slurm_cluster.py) is private to this module: its own munged socket, ports, state and
spool directories, all under a tmp dir; it installs slurm-wlm and munge with apt-get when they are missing (or skips,
saying why), and stops only the daemons it started, also when a test fails.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.integration.slurm_cluster import SlurmCluster
from tests.integration.test_workflow_tiny import _copy_workflow, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

# The base model's judged answers on one dataset: materialize, generate and judge as SLURM jobs, the dataset
# preparation as a localrule. Each SLURM job starts snakemake twice (batch step, then srun step) before its script:
# the aligned model's answers (self-answers, SFT, DPO as SLURM jobs too) took 3.6 min of the default test command's
# 15 and the whole report (~118 jobs) over 15 min, so this builds the smallest target with a model job, a generation
# job and a judge job; the tiny DAG test runs every rule locally, and test_lint_profiles checks every rule's resources.
TARGET = "results/tiny/scored/base/harmful_test.parquet"

# Test-only executor settings (the profile stays the one for real clusters): no accounting here, so squeue is the
# status command (MinJobAge is a day); poll every second instead of the plugin's 40 s first wait; keep the SLURM
# logs of successful jobs so the test can read their job ids.
SLURM_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
               "--seconds-between-status-checks", "1", "--max-status-checks-per-second", "10",
               "--slurm-keep-successful-logs", "--slurm-delete-logfiles-older-than", "0")

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
JOB_BLOCK = re.compile(r"^(local)?rule (\w+):\n(?:^ +.*\n)*?^ +jobid: (\d+)$", re.M)


def declared_localrules(wf: Path) -> set[str]:
    """Rules that the workflow's rule files mark `localrule: True`."""
    local = set()
    for smk in [wf / "Snakefile", *sorted((wf / "rules").glob("*.smk"))]:
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M):
            if re.search(r"^\s+localrule:\s*True\s*$", m.group(2), re.M):
                local.add(m.group(1))
    return local


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    c = SlurmCluster(root)
    c.start()  # skips the module when slurm-wlm/munge are missing and cannot be installed
    print(f"\nSLURM cluster up in {time.monotonic() - started:.1f}s (incl. any apt-get install): {c.running()}")
    try:
        yield c
    finally:
        pids = c.running()
        c.stop()
        leftover = [pid for pid in pids.values() if _alive(pid)]
        assert not leftover, f"SLURM daemons still running after stop: {leftover}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def snakemake_on(cluster, wf: Path, target: str):
    """Snakemake with the SLURM profile against this module's cluster, no other SLURM job's variables leaking in."""
    with pytest.MonkeyPatch.context() as mp:
        for var, value in cluster.env().items():  # SLURM_CONF and friends, for snakemake and the jobs it submits
            if os.environ.get(var) != value:
                mp.setenv(var, value)
        for var in [v for v in os.environ if v.startswith(("SLURM_", "SBATCH_", "SRUN_")) and v != "SLURM_CONF"]:
            mp.delenv(var)
        return snakemake(wf, "--profile", str(wf / "profiles" / "slurm"), *SLURM_FLAGS, target, check=False)


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory):
    """The target built through the SLURM profile; returns (workflow copy, snakemake output, wall seconds)."""
    wf = _copy_workflow(tmp_path_factory.mktemp("wf_slurm"))
    started = time.monotonic()
    proc = snakemake_on(cluster, wf, TARGET)
    wall = time.monotonic() - started
    out = proc.stdout + proc.stderr
    print(f"\nsnakemake --profile profiles/slurm {TARGET}: exit {proc.returncode} in {wall:.0f}s")
    assert proc.returncode == 0, (f"snakemake failed ({proc.returncode}):\n{out[-8000:]}\n"
                                  f"cluster logs:\n{cluster.logs_tail()}")
    return wf, out, wall


def _jobs(out: str) -> dict[str, tuple[str, bool]]:
    """Snakemake job id -> (rule, ran as a localrule) from the run's job blocks."""
    return {jobid: (rule, bool(local)) for local, rule, jobid in JOB_BLOCK.findall(out)}


def _submitted(out: str) -> dict[str, tuple[str, Path]]:
    """Snakemake job id -> (SLURM job id, SLURM log file) from the plugin's 'submitted with SLURM jobid' lines."""
    return {job: (slurm_id, Path(log)) for job, slurm_id, log in SUBMITTED.findall(out)}


def test_target_built_through_slurm(run):
    wf, out, _ = run
    assert (wf / TARGET).stat().st_size > 0
    assert "SLURM run ID:" in out
    assert "Finished jobid" in out or "steps (100%) done" in out


def test_compute_jobs_ran_as_slurm_jobs_with_logs(run):
    wf, out, _ = run
    jobs, submitted = _jobs(out), _submitted(out)
    local = declared_localrules(wf)
    compute = {job: rule for job, (rule, _) in jobs.items() if rule not in local}
    assert compute, "no compute jobs ran"
    assert set(submitted) == set(compute), ("not submitted:", sorted(set(compute) - set(submitted)),
                                            "submitted but not a compute job:", sorted(set(submitted) - set(compute)))
    assert len({slurm_id for slurm_id, _ in submitted.values()}) == len(submitted)
    # Each SLURM job wrote its log (kept by --slurm-keep-successful-logs) under .snakemake/slurm_logs/rule_<rule>/,
    # named by its SLURM job id, and the job inside ran the same rule.
    logdir = (wf / ".snakemake" / "slurm_logs").resolve()
    for job, (slurm_id, log) in submitted.items():
        assert log.is_file(), log
        assert log.name == f"{slurm_id}.log" and f"rule_{compute[job]}" in log.parts, log
        assert logdir in log.resolve().parents, log
        assert re.search(rf"^(local)?rule {compute[job]}:", log.read_text(), re.M), log
    assert set(compute.values()) == {"materialize", "generate", "judge"}


def test_slurm_itself_recorded_the_jobs_completed(run, cluster):
    """squeue (MinJobAge keeps finished jobs for a day) lists exactly the submitted jobs, all COMPLETED, on the node."""
    wf, out, _ = run
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    q = cluster.run("squeue", "--noheader", "--states=all", "--name", run_id, "--format=%i|%T|%N|%k")
    assert q.returncode == 0, q.stderr
    rows = [line.split("|", 3) for line in q.stdout.split("\n") if line.strip()]
    submitted = _submitted(out)
    jobs = _jobs(out)
    assert {r[0] for r in rows} == {slurm_id for slurm_id, _ in submitted.values()}
    assert {r[1] for r in rows} == {"COMPLETED"}
    assert {r[2] for r in rows} == {cluster.node}
    by_slurm_id = {slurm_id: jobs[job][0] for job, (slurm_id, _) in submitted.items()}
    for slurm_id, _, _, comment in rows:  # the plugin's --comment is rule_<rule>[_wildcards_...]
        rule = by_slurm_id[slurm_id]
        assert comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"), (slurm_id, comment)


def test_localrules_did_not_go_to_slurm(run):
    wf, out, _ = run
    local = declared_localrules(wf)
    assert {"prepare_dataset", "evaluation_section"} <= local
    jobs, submitted = _jobs(out), _submitted(out)
    ran_local = {job: rule for job, (rule, is_local) in jobs.items() if rule in local}
    assert "prepare_dataset" in set(ran_local.values())
    for job, rule in ran_local.items():
        assert jobs[job][1], f"{rule} (job {job}) was not run as a localrule"
        assert job not in submitted, f"localrule {rule} (job {job}) was submitted to SLURM"
    logged = {p.name for p in (wf / ".snakemake" / "slurm_logs").iterdir()}  # rule_<rule> per submitted rule
    assert logged and not {f"rule_{rule}" for rule in local} & logged, logged


def test_no_slurm_job_left_behind(run, cluster):
    q = cluster.run("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING", "--format=%i %T")
    assert q.returncode == 0 and q.stdout.strip() == "", q.stdout + q.stderr


def test_cluster_daemons_are_this_modules_own(cluster):
    procs = cluster.running()
    assert set(procs) == {"munged", "slurmctld", "slurmd"}
    cmdlines = {name: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                for name, pid in procs.items()}
    assert str(cluster.conf) in cmdlines["slurmctld"] and str(cluster.conf) in cmdlines["slurmd"]
    assert str(cluster.munge_socket) in cmdlines["munged"]
    ping = cluster.run("scontrol", "ping")
    assert ping.returncode == 0 and "UP" in ping.stdout


@pytest.mark.slow
def test_the_alignment_path_runs_as_slurm_jobs(cluster, tmp_path):
    """Self-answers, SFT and DPO through the profile too (about 3.6 min here, so not in the default command)."""
    wf = _copy_workflow(tmp_path / "wf")
    target = "results/tiny/scored/aligned/harmful_test.parquet"
    proc = snakemake_on(cluster, wf, target)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{out[-8000:]}\ncluster logs:\n{cluster.logs_tail()}"
    submitted_rules = {_jobs(out)[job][0] for job in _submitted(out)}
    assert {"materialize", "self_answers", "sft", "preference", "generate", "judge"} <= submitted_rules
    assert (wf / target).stat().st_size > 0
