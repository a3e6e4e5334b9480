"""Time a command a user runs (``make test``, ``make test-fast``, ``dvc repro``) and record it in
reports/durations.json with the machine it ran on, so that the README's expected times are read from a
measurement (tests/test_docs.py checks them) rather than typed.

    python benchmarks/durations.py "make test" -- make test

The command's exit status is passed on; only a command that succeeded is recorded (a failed run says nothing
about how long the work takes). Each name keeps its latest measurement.

Two machines that report the same CPU name can differ in speed (shared hosts), and the files' measurements come
from several machines: each one therefore also records a reference measured just before the command on the same
machine, the CPU seconds a fresh Python spends importing Lightning (torch, torchmetrics, torchvision), the
start-up most of the test suite's and the pipeline's processes pay. A measurement divided by its reference
compares across machines.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DURATIONS = REPO / "reports" / "durations.json"
REFERENCE = [sys.executable, "-c", "import pytorch_lightning"]


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (x86-64 Linux), or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(), "gpu": None}


def reference_cpu_seconds(runs: int = 3) -> float:
    """The median CPU seconds (user + system) of ``runs`` fresh processes running :data:`REFERENCE`: CPU
    time, not wall time, so that a busy machine slows it less than it slows the command."""
    spent = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(REFERENCE, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(spent)


def record(
    name: str,
    seconds: float,
    command: list[str],
    load: list[float],
    reference: float,
    path: Path = DURATIONS,
) -> dict[str, Any]:
    """Merge one measurement into ``path`` (keys sorted, so that the file diffs cleanly). ``load``: the
    machine's 1-minute load average sampled from the start to the end (what else ran beside the command): its
    first, mean and last value are kept. ``reference``: :func:`reference_cpu_seconds` on the same machine."""
    durations = json.loads(path.read_text()) if path.is_file() else {}
    durations[name] = {
        "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 1),
        "command": " ".join(command),
        "machine": machine(),
        "load_average_start_mean_end": [
            round(load[0], 2),
            round(sum(load) / len(load), 2),
            round(load[-1], 2),
        ],
        "measured_on": datetime.now(UTC).date().isoformat(),
        "reference": {"command": shlex.join(["python", *REFERENCE[1:]]), "cpu_seconds": round(reference, 2)},
    }
    path.write_text(json.dumps(durations, indent=2, sort_keys=True) + "\n")
    return durations[name]


def sample_load(samples: list[float], stop: threading.Event, every: float = 15.0) -> None:
    """The 1-minute load average every ``every`` seconds until ``stop``: what else ran beside the command."""
    while not stop.wait(every):
        samples.append(os.getloadavg()[0])


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print('usage: durations.py NAME -- COMMAND [ARGS...]  (e.g. durations.py "make test" -- make test)',
              file=sys.stderr)  # fmt: skip
        return 2
    name, command = argv[0], argv[2:]
    reference = reference_cpu_seconds()
    samples, stop = [os.getloadavg()[0]], threading.Event()
    sampler = threading.Thread(target=sample_load, args=(samples, stop), daemon=True)
    sampler.start()
    started = time.perf_counter()
    status = subprocess.run(command, cwd=REPO).returncode
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    samples.append(os.getloadavg()[0])
    if status == 0:
        entry = record(name, seconds, command, samples, reference, DURATIONS)
        print(
            f"{name}: {entry['minutes']} min on {entry['machine']['cores']} cores"
            f" (reference {entry['reference']['cpu_seconds']} s) -> {DURATIONS}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
