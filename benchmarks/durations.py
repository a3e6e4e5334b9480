"""Time a command a user runs (``make test``, ``make test-fast``, ``dvc repro``) and record it in
reports/durations.json with the machine it ran on, so that the README's expected times are read from a
measurement (tests/test_docs.py checks them) rather than typed.

    python benchmarks/durations.py "make test" -- make test

The command's exit status is passed on; only a command that succeeded is recorded (a failed run says nothing
about how long the work takes). Each name keeps its latest measurement.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DURATIONS = REPO / "reports" / "durations.json"


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


def record(
    name: str, seconds: float, command: list[str], load: list[float], path: Path = DURATIONS
) -> dict[str, Any]:
    """Merge one measurement into ``path`` (keys sorted, so that the file diffs cleanly). ``load``: the
    machine's 1-minute load average at the start and the end (what else ran beside the command)."""
    durations = json.loads(path.read_text()) if path.is_file() else {}
    durations[name] = {
        "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 1),
        "command": " ".join(command),
        "machine": machine(),
        "load_average_start_end": [round(value, 2) for value in load],
        "measured_on": datetime.now(UTC).date().isoformat(),
    }
    path.write_text(json.dumps(durations, indent=2, sort_keys=True) + "\n")
    return durations[name]


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print('usage: durations.py NAME -- COMMAND [ARGS...]  (e.g. durations.py "make test" -- make test)',
              file=sys.stderr)  # fmt: skip
        return 2
    name, command = argv[0], argv[2:]
    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    status = subprocess.run(command, cwd=REPO).returncode
    seconds = time.perf_counter() - started
    if status == 0:
        entry = record(name, seconds, command, [load_at_start, os.getloadavg()[0]], DURATIONS)
        print(f"{name}: {entry['minutes']} min on {entry['machine']['cores']} cores -> {DURATIONS}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
