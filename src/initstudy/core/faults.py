"""Named pause points, so that tests can kill a process at an exact moment (kill -9 between two writes).

``INITSTUDY_PAUSE_AT=<name>`` makes the process print ``paused at <name>`` to stderr and sleep when it
reaches that point; nothing happens otherwise. Used only by the reliability tests.
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_ENV = "INITSTUDY_PAUSE_AT"


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) == name:
        print(f"paused at {name}", file=sys.stderr, flush=True)
        time.sleep(3600)
