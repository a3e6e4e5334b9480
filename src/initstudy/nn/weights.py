"""A run's weights at step 0 and after training, kept in its folder (and logged to MLflow with it).

Any later analysis (distance from initialization, weight spectra, re-evaluation on other data) then needs no
retraining. The files are ``torch.save`` of the state dict on the CPU: the same tensors give the same bytes,
and :func:`load` reads them back with ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from initstudy.core import atomic

if TYPE_CHECKING:  # torch is imported where the files are read or written, not here: the run-folder code
    # (initstudy.runs.rundir) reads WEIGHT_FILES in processes that must apply the numerics profile first.
    import torch
    from torch import nn

# The two weight files of a run folder (part of its contract: initstudy.runs.rundir).
WEIGHT_FILES = ("weights_initial.pt", "weights_final.pt")
INITIAL, FINAL = WEIGHT_FILES


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state dict now (later optimizer steps do not change it)."""
    return {
        name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in model.state_dict().items()
    }


def save(state: dict[str, torch.Tensor], path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load(path: Path) -> dict[str, torch.Tensor]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
