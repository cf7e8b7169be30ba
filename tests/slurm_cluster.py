"""A throwaway one-node SLURM cluster on localhost (Debian's slurm-wlm 22.05 + munge) for sbatch tests.

Everything lives in one temporary directory: a private munged with its own key and socket, and slurmctld
and slurmd on free ports, so nothing collides with a system munge or SLURM.  The daemons run as root in
the foreground as children of the test process, without cgroups, systemd or accounting.

Use it from a test module with ``pytest_plugins = ["slurm_cluster"]`` (``tests`` is on ``sys.path`` as for
``cli_runs``; importing the fixture instead trips ruff's F811 at every test that takes it) and add
``cluster.env`` to the environment of whatever calls sbatch, e.g. ``monkeypatch.setenv("SLURM_CONF", ...)``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from debian import apt_install

TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "munged", "mungekey")
PARTITION = "debug"


def ensure_slurm() -> str | None:
    """Make sure the SLURM and munge programs are on PATH, installing them with apt-get when root.

    Returns
    -------
    str or None
        None when everything is there, otherwise a one-line reason to skip.
    """
    return apt_install(["slurm-wlm", "munge"], list(TOOLS))


@dataclass
class SlurmCluster:
    """A running cluster: its directory, its slurm.conf, and the environment clients need.

    Attributes
    ----------
    workdir
        Directory holding the key, configuration, state, spool, pid and log files.
    conf
        The slurm.conf that the daemons use.
    host
        Short host name, which is both the controller and the only node.
    env
        Variables to add to a client's environment (``SLURM_CONF``) so that sbatch, squeue and scancel
        talk to this cluster.  SLURM also sets ``SLURM_CONF`` inside every job.
    """

    workdir: Path
    conf: Path
    host: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (e.g. ``"squeue", "-h"``) against this cluster, capturing text."""
        env = {**os.environ, **self.env}
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)

    def jobs(self) -> list[str]:
        """Return the ids of the jobs still pending, running or completing."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def wait_jobs(self, timeout: float = 60) -> None:
        """Wait until squeue is empty, failing with the queue and the log tails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.jobs():
            if time.monotonic() > deadline:
                queue = self.run("squeue").stdout
                raise TimeoutError(f"SLURM jobs still queued after {timeout} s:\n{queue}{self.logs()}")
            time.sleep(0.2)

    def logs(self, lines: int = 15) -> str:
        """Return the last ``lines`` lines of every daemon log, for error messages."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n" + "\n".join(parts)

    def stop(self, timeout: float = 15) -> None:
        """Cancel every job, then stop slurmd and slurmctld, then munged, and wait for them to exit."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            # Jobs first: slurmstepd outlives slurmd, so a running job would survive the daemons.
            self.run("scancel", f"--partition={PARTITION}")
            try:
                self.wait_jobs(timeout)
            except (TimeoutError, subprocess.TimeoutExpired):
                pass  # a job that will not die must not keep the daemons alive too
        # munged last: slurmctld and slurmd authenticate their last messages with it.
        for names in (("slurmd", "slurmctld"), ("munged",)):
            procs = [self.procs.pop(name) for name in names if name in self.procs]
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free right now (the kernel's picks)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def start_slurm(workdir: Path, cpus: int | None = None, timeout: float = 30) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``workdir`` and wait until the node is idle.

    Parameters
    ----------
    workdir
        An empty directory for all the cluster's files.  Its path must stay well under the 108
        characters of a Unix socket path, since munged's socket lives there.
    cpus
        CPUs the node offers; defaults to the machine's.  More than the machine has is allowed
        (``config_overrides``), to run more one-CPU jobs at once than there are cores.
    timeout
        Seconds to wait for the node to become idle.

    Returns
    -------
    SlurmCluster
        The running cluster; call its ``stop()`` when done.
    """
    # slurmctld refuses to start unless SlurmctldHost names this machine's short host name, and slurmd
    # registers under it; the explicit 127.0.0.1 addresses keep name resolution out of the picture.
    host = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    ctld_port, slurmd_port = _free_ports(2)
    for sub in ("state", "spool"):
        (workdir / sub).mkdir()
    key, munge_socket = workdir / "munge.key", workdir / "munge.socket"
    conf = workdir / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=ilflows-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Default=YES Nodes={host} MaxTime=INFINITE State=UP
"""
    )
    env = {"SLURM_CONF": str(conf)}
    cluster = SlurmCluster(workdir=workdir, conf=conf, host=host, env=env)
    # mungekey writes the key 0600, as munged demands of a key file.
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
    commands = {
        # --force: the socket's directory is private (0700), which munged would otherwise refuse.
        "munged": ["munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}"]
        + [f"--{kind}-file={workdir}/munged.{kind}" for kind in ("pid", "seed")],
        # -c: start from a clean state; -D: stay in the foreground so that we own and reap the process.
        # In the foreground all three log to stderr, which goes to <name>.log; no LogFile, no duplicates.
        "slurmctld": ["slurmctld", "-D", "-c", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-N", host, "-f", str(conf)],
    }
    try:
        for name, cmd in commands.items():
            with open(workdir / f"{name}.log", "wb") as out:
                cluster.procs[name] = subprocess.Popen(
                    cmd, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out, stderr=out
                )
            if name == "munged":  # slurmctld exits at once if the socket is not there yet
                _wait_for(munge_socket.exists, cluster, timeout, "munged's socket")
            elif name == "slurmctld":  # clients wait a whole second before retrying a refused connection
                _wait_for(lambda: _listening(ctld_port), cluster, timeout, "slurmctld's port")
        _wait_for(lambda: _node_state(cluster) == "idle", cluster, timeout, f"node {host} to be idle")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _listening(port: int) -> bool:
    """Return whether something accepts TCP connections on ``port`` of localhost."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _node_state(cluster: SlurmCluster) -> str:
    """Return sinfo's long state of the node ("idle", "down*", ...), or an error while unreachable."""
    try:
        proc = cluster.run("sinfo", "-h", "-N", "-n", cluster.host, "-o", "%T", timeout=5)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    return proc.stdout.strip() or proc.stderr.strip()


def _wait_for(ready: Callable[[], bool], cluster: SlurmCluster, timeout: float, what: str) -> None:
    """Poll ``ready()`` until true; fail early when a daemon dies, with the log tails either way."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [
            f"{name} exited with {p.returncode}" for name, p in cluster.procs.items() if p.poll() is not None
        ]
        if dead or time.monotonic() > deadline:
            why = "; ".join(dead) or f"not ready after {timeout} s"
            raise RuntimeError(f"SLURM test cluster: waiting for {what}: {why}{cluster.logs()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Yield a running one-node SLURM cluster for the module, or skip when SLURM cannot be had."""
    reason = ensure_slurm()
    if reason is None and os.geteuid() != 0:
        reason = "the SLURM test cluster runs slurmd and SlurmUser as root"
    if reason:
        pytest.skip(reason)
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()
