"""numpy's BLAS pinned to one kernel set and one thread, for the stages whose numbers come from numpy's matrix
products: the mean-field predictions of :mod:`initstudy.nn.propagation` (``diagnose``, the Schoenholz report).

numpy's wheels carry OpenBLAS built for every x86-64 CPU (``DYNAMIC_ARCH``): when numpy loads it, it picks
the kernels of the CPU it finds (AVX-512 ``SkylakeX`` on one machine, AVX ``Sandybridge`` on another) and one
thread per core, and a dot product summed by other kernels or split over other threads differs in its last
bits. Measured: the predictions in ``reports/diagnostics/diagnostics.csv`` computed on two machines differed
in the 15th-17th digit; on one machine, ``OPENBLAS_CORETYPE`` alone reproduced either file, and so did the
thread count. torch's training path is pinned by the numerics profile (initstudy.config.numerics); this pins numpy's,
through the variables OpenBLAS reads when it loads: the AVX kernels (every x86-64 CPU since 2011) on one
thread, on every machine. Importing this module pins them; it must come before anything imports numpy (the
stage's entry points import it first). Elsewhere (another architecture) nothing is set.
"""

from __future__ import annotations

import os
import platform
import sys

OPENBLAS_CORETYPE = "Sandybridge"
OPENBLAS_THREADS = "1"
PINNED = {"OPENBLAS_CORETYPE": OPENBLAS_CORETYPE, "OPENBLAS_NUM_THREADS": OPENBLAS_THREADS}


def pin_openblas() -> None:
    """Set OpenBLAS's kernel set and thread count for numpy, unless numpy is already loaded (its OpenBLAS
    then keeps what it chose: the entry points import this module before numpy)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or "numpy" in sys.modules:
        return
    os.environ.update(PINNED)


pin_openblas()
