"""Real services for the tests, started by the scripts a user runs: a one-node SLURM cluster
(``scripts/local-slurm.sh``) and an MLflow server on PostgreSQL (``scripts/mlflow-server.sh``), each in a
private folder, on loopback, stopped and removed afterwards.

A machine that cannot run them (not root, no apt-get: the scripts exit 3 with one line) skips the tests that
need them, with that line as the reason; with INITSTUDY_REQUIRE_CLUSTER=1 (set by .ci/run) that is a failure.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
REQUIRE_ENV = "INITSTUDY_REQUIRE_CLUSTER"
CANNOT_RUN = 3  # the scripts' exit status for "this machine cannot run it"


def unavailable(reason: str) -> None:
    """Skip with ``reason``; fail where the services are required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} -- {REQUIRE_ENV}=1: this test must run here")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_folder(prefix: str) -> Path:
    """A fresh folder under /tmp: short (munge's socket path is limited to ~100 characters) and outside
    pytest's 0700 tmp tree, which the ``postgres`` user cannot enter."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o711)
    return folder


def script(name: str, action: str, folder: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run ``scripts/<name> <action> <folder>``; exit 3 is a skip (a failure on CI), any other error fails."""
    environment = {**os.environ, **(env or {})}
    result = subprocess.run(
        ["bash", str(SCRIPTS / name), action, str(folder)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )
    if result.returncode == CANNOT_RUN:
        unavailable(result.stderr.strip().splitlines()[-1])
    if result.returncode != 0:
        pytest.fail(f"{name} {action} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> object:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


# ---- SLURM ---------------------------------------------------------------------------------------------


@dataclass
class SlurmCluster:
    """A running one-node cluster: its folder (config, state, logs) and the environment its clients need."""

    folder: Path
    start_seconds: float

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.folder / "slurm.conf")}

    def command(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            list(args), capture_output=True, text=True, timeout=60, env={**os.environ, **self.env}
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def queue(self) -> dict[str, str]:
        """Job id (``<array>_<index>`` for array tasks) -> state, of the jobs squeue lists (pending/running)."""
        out = self.command("squeue", "-h", "-r", "-o", "%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a mapping (jobs are known for MinJobAge = 10 min after they end)."""
        out = self.command("scontrol", "show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def completed(self) -> list[dict[str, str]]:
        """Every record of the job-completion log (one per job end, requeues included), oldest first."""
        path = self.folder / "log" / "jobcomp.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines if line.strip()]


@contextlib.contextmanager
def local_slurm() -> Iterator[SlurmCluster]:
    folder = private_folder("slurm-")
    started = time.monotonic()
    try:
        script("local-slurm.sh", "start", folder)
        yield SlurmCluster(folder, time.monotonic() - started)
    finally:
        if (folder / "slurm.conf").exists():
            subprocess.run(["bash", str(SCRIPTS / "local-slurm.sh"), "stop", str(folder)], timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def slurm_overrides(cpus: int = 1, mem_gb: int = 1) -> list[str]:
    """The study's SLURM launcher, sized for the one-node test cluster."""
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.cpus_per_task={cpus}",
        f"hydra.launcher.mem_gb={mem_gb}",
        "hydra.launcher.timeout_min=10",
    ]


# ---- Lightning probe -------------------------------------------------------------------------------------


def probe_path(folder: Path, records: Path) -> dict[str, str]:
    """The environment that loads ``slurm_probe.Probe`` into every Trainer of a job, through Lightning's
    ``pytorch_lightning.callbacks_factory`` entry-point group (a dist-info folder on PYTHONPATH)."""
    folder.mkdir(parents=True)
    records.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("slurm_probe.py"), folder / "slurm_probe.py")
    info = folder / "initstudy_test_probe-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: initstudy-test-probe\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[pytorch_lightning.callbacks_factory]\nprobe = slurm_probe:factory\n"
    )
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "INITSTUDY_PROBE_DIR": str(records)}


# ---- MLflow on PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    folder: Path
    url: str
    start_seconds: float


@contextlib.contextmanager
def mlflow_postgres_server() -> Iterator[MlflowServer]:
    folder = private_folder("mlflow-")
    env = {
        "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
        "MLFLOW_PORT": str(free_port()),
        "PG_PORT": str(free_port()),
    }
    started = time.monotonic()
    try:
        result = script("mlflow-server.sh", "start", folder, env=env, timeout=300)
        url = result.stdout.strip().split("=", 1)[1]
        yield MlflowServer(folder, url, time.monotonic() - started)
    finally:
        if (folder / "ports").exists():
            subprocess.run(
                ["bash", str(SCRIPTS / "mlflow-server.sh"), "stop", str(folder)],
                timeout=120,
                env={**os.environ, **env},
            )
        shutil.rmtree(folder, ignore_errors=True)


# ---- OpenSSH on loopback (a DVC remote over SSH) ------------------------------------------------------------


@dataclass
class SshServer:
    """A running sshd: where it listens and the throw-away key that logs in as ``user``."""

    folder: Path
    port: int
    user: str
    keyfile: Path


def ssh_keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=60)


@contextlib.contextmanager
def loopback_sshd() -> Iterator[SshServer]:
    """Debian's OpenSSH server on a free loopback port with its own host key, authorized key, pid file and
    config in a private folder: the system's /etc/ssh is neither read nor changed. Key login only, as the
    current user, SFTP built in (all a DVC remote uses). sshd needs its privilege-separation folder
    /run/sshd, which the packaged service would create: created here if missing."""
    sshd = Path("/usr/sbin/sshd")  # sshd refuses to start unless run by its absolute path
    if not sshd.is_file() or not shutil.which("ssh-keygen"):
        unavailable("no OpenSSH server (/usr/sbin/sshd, ssh-keygen): apt-get install openssh-server")
    if os.geteuid() != 0:
        unavailable("sshd's privilege separation needs root")
    folder = private_folder("sshd-")
    folder.chmod(0o700)
    port = free_port()
    ssh_keygen(folder / "host_key")
    ssh_keygen(folder / "user_key")
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    (folder / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_key'}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",  # it refuses key files under /tmp, which anyone may write to (sticky bit)
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (folder / "sshd.log").open("w")
    server = subprocess.Popen(
        [str(sshd), "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def banner() -> bool:
            if server.poll() is not None:
                pytest.fail(f"sshd exited {server.returncode}: {(folder / 'sshd.log').read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            ):
                return sock.recv(64).startswith(b"SSH-2.0")
            return False

        wait_for(banner, timeout=30, what=f"sshd on 127.0.0.1:{port}")
        yield SshServer(folder, port, getpass.getuser(), folder / "user_key")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
