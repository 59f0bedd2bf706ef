"""A throwaway single-node SLURM cluster for integration tests.

`SlurmCluster(root).start()` writes a munge key, slurm.conf and cgroup.conf under `root`, starts private `munged`,
`slurmctld` and `slurmd` processes (foreground children of this process, on free ports, with their own socket, state,
spool, pid and log files) and waits until `sinfo` shows the node idle. `stop()` cancels the cluster's jobs and ends
only the daemons that `start()` launched, by their process ids. Nothing under /etc is read or written: clients find
the cluster through `SLURM_CONF`, which `env()` sets.

`ensure_slurm_installed()` installs Debian's `slurm-wlm` and `munge` with apt-get when the binaries are missing, or
skips the calling test with the reason when that is impossible (not root, no apt-get, apt failed).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Binaries the cluster and the executor plugin need, and the Debian packages that ship them.
CLIENTS = ("srun", "sbatch", "squeue", "scancel", "scontrol", "sinfo", "sacct")
NEEDED = ("munged", "slurmctld", "slurmd", "slurmstepd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
PACKAGES = ("slurm-wlm", "munge")
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def _missing() -> list[str]:
    return [name for name in NEEDED if _which(name) is None]


def _apt(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=timeout)


def ensure_slurm_installed() -> None:
    """Install slurm-wlm and munge when any needed binary is missing; skip the test when that cannot be done."""
    missing = _missing()
    if not missing:
        return
    why = f"SLURM binaries missing ({', '.join(missing)})"
    if os.geteuid() != 0:
        pytest.skip(f"{why} and not root, so apt-get cannot install {' '.join(PACKAGES)}")
    if shutil.which("apt-get") is None:
        pytest.skip(f"{why} and no apt-get to install {' '.join(PACKAGES)}")
    # Package scripts would start the system munge/slurm services; a policy-rc.d that denies every start keeps them
    # down (Docker images ship one already). Only a file created here is removed again.
    own_policy = not POLICY_RC.exists()
    try:
        if own_policy:
            POLICY_RC.write_text("#!/bin/sh\n# temporary, written by tests/integration/slurm_cluster.py\nexit 101\n")
            POLICY_RC.chmod(0o755)
        install = ("install", "-y", "--no-install-recommends", *PACKAGES)
        proc = _apt(*install)
        if proc.returncode != 0:  # a fresh machine may have no package lists yet
            _apt("update")
            proc = _apt(*install)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"{why}; installing {' '.join(PACKAGES)} with apt-get failed: {err}")
    finally:
        if own_policy:
            POLICY_RC.unlink(missing_ok=True)
    if proc.returncode != 0:
        pytest.skip(f"{why}; `apt-get install {' '.join(PACKAGES)}` failed ({proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[-600:]}")
    if _missing():
        pytest.skip(f"{' '.join(PACKAGES)} installed but {', '.join(_missing())} still missing")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (a killed pytest leaves no daemon)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict[str, int]:
    """CPUs, sockets, cores, threads and RealMemory as `slurmd -C` reports them for this machine."""
    proc = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SLURM_CONF": os.devnull})
    found = dict(re.findall(r"(\w+)=(\d+)", proc.stdout))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    if all(k in found for k in keys):
        return {k: int(found[k]) for k in keys}
    cpus = os.cpu_count() or 1
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return {"CPUs": cpus, "Boards": 1, "SocketsPerBoard": 1, "CoresPerSocket": cpus, "ThreadsPerCore": 1,
            "RealMemory": mem_mb}


class SlurmCluster:
    """One node, one partition, no accounting; everything lives under `root`."""

    def __init__(self, root: Path, min_job_age: int = 86400):
        self.root = Path(root)
        self.min_job_age = min_job_age
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.bin = self.root / "bin"
        self.node = socket.gethostname().split(".")[0]
        self.partition = "debug"
        self._procs: dict[str, subprocess.Popen] = {}
        self._atexit = False
        self._logs: dict[str, Path] = {}

    # configuration -------------------------------------------------------------------------------------------------

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose SLURM clients (sbatch, squeue, srun, ...) talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", ""), *SBIN])
        for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_")) and v != "SLURM_CONF"]:
            del env[var]  # when the tests themselves run inside a SLURM job
        return env

    def write_config(self) -> None:
        for sub in ("etc", "munge", "state", f"spool/{self.node}", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o711)  # clients need to reach the socket; the key itself is 0400
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        hw = _node_hardware()
        ctld_port, slurmd_port = _free_port(), _free_port()
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
        r = self.root
        self.conf.write_text(f"""\
# Written by tests/integration/slurm_cluster.py: a private single-node test cluster.
ClusterName=nktest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no delegated cgroups here: track processes by parent pid, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without accounting, squeue is the only record of finished jobs: keep them for a day.
MinJobAge={self.min_job_age}
ReturnToService=2
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={hw['CPUs']} Boards={hw['Boards']} \
SocketsPerBoard={hw['SocketsPerBoard']} CoresPerSocket={hw['CoresPerSocket']} ThreadsPerCore={hw['ThreadsPerCore']} \
RealMemory={hw['RealMemory']} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self._write_client_wrappers()
        (self.conf.parent / "cgroup.conf").write_text(
            "# Unused with proctrack/linuxproc and task/none; present so no daemon goes looking for one.\n"
            "CgroupAutomount=no\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n")

    def _write_client_wrappers(self) -> None:
        """`srun` & co. that find this cluster's slurm.conf even where SLURM_CONF was dropped from the environment.

        The slurm-jobstep executor runs each job's `srun` with every SLURM_* variable but a few job ids removed, so
        inside a job only /etc/slurm/slurm.conf (or configless DNS) would be found; real clusters have those, this
        private one has PATH. Each wrapper sets SLURM_CONF and execs the real client.
        """
        self.bin.mkdir(parents=True, exist_ok=True)
        for name in CLIENTS:
            real = _which(name)
            if real is None:
                continue
            wrapper = self.bin / name
            wrapper.write_text(f"#!/bin/sh\nSLURM_CONF={shlex.quote(str(self.conf))} exec {shlex.quote(real)} \"$@\"\n")
            wrapper.chmod(0o755)

    # daemons -------------------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.root / "log" / f"{name}.out"
        self._logs[name] = log
        with open(log, "ab") as out:
            self._procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                 env=self.env(), start_new_session=True, preexec_fn=_die_with_parent)
        if not self._atexit:
            atexit.register(self.stop)  # a test run that ends without fixture teardown still stops them
            self._atexit = True

    def _wait(self, what: str, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       f"{self.logs_tail()}")
            if ok():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.logs_tail()}")

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run([_which(argv[0]) or argv[0], *argv[1:]], env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def node_state(self) -> str:
        try:
            proc = self.run("sinfo", "--noheader", "--nodes", self.node, "--format=%T", timeout=10)
        except subprocess.TimeoutExpired:
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def start(self, timeout: float = 120) -> SlurmCluster:
        ensure_slurm_installed()
        self.write_config()
        try:
            r = self.root
            self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--key-file={r}/munge/munge.key",
                                   f"--socket={self.munge_socket}", f"--pid-file={r}/run/munged.pid",
                                   f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed"])
            self._wait("munged", self._munge_works, timeout)
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._wait("slurmctld", lambda: self.run("scontrol", "ping", timeout=10).returncode == 0, timeout)
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
            self._wait(f"node {self.node} idle", lambda: self.node_state().rstrip("*") == "idle", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _munge_works(self) -> bool:
        if not self.munge_socket.exists():
            return False
        munge, unmunge = _which("munge"), _which("unmunge")
        if not (munge and unmunge):
            return True
        cred = subprocess.run([munge, "-n", f"--socket={self.munge_socket}"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        back = subprocess.run([unmunge, f"--socket={self.munge_socket}"], input=cred.stdout, capture_output=True,
                              timeout=10)
        return back.returncode == 0

    def stop(self, timeout: float = 30) -> None:
        """Cancel this cluster's jobs, then end the daemons started here (slurmd, slurmctld, munged), by pid."""
        if not self._procs:
            return
        if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "--user", str(os.geteuid()), timeout=15)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    q = self.run("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING",
                                 "--format=%i", timeout=10)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.5)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()

    def running(self) -> dict[str, int]:
        """Name -> pid of the daemons started here that are still alive."""
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    def logs_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace")[-chars:]
            parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
