"""Per-layer statistics during training: how each hidden layer's activations and back-propagated gradients are
distributed as training goes on (Glorot & Bengio 2010, Figure 2: mean and spread of each layer's activations
over training; Figures 6 and 7: their histograms and the back-propagated gradients', at initialization and
later), not only at step 0 (initstudy.nn.propagation, initstudy.diagnose).

Every ``module.layer_stats_every_n_steps`` optimizer steps, and at step 0, a probe: one forward and backward
pass on fixed images, the first :data:`PROBE_SIZE` of the evaluation split (Glorot & Bengio used 300 fixed
test images). Gradients come from ``torch.autograd.grad``, so no ``.grad`` is written, no optimizer state,
weight or random state changes: a run trains bit for bit the same with and without probes
(tests/test_layer_stats.py). Off by default (null); a probe costs about one optimizer step at batch 300.

Per hidden layer (1-based) and probe, in ``layer_stats.csv`` of the run folder (long format: step, layer,
statistic, value): the activations' mean, std and quantiles (:data:`QUANTILES`), the share of dead units
(ReLU: silent for every probe image) or saturated outputs (tanh, sigmoid, softsign: as
``initstudy.nn.propagation`` counts them), the same mean, std and quantiles of the back-propagated gradient
dL/dz with respect to the layer's pre-activations z (the gradient Glorot & Bengio's Figure 7 shows), and the
std of the layer's weight gradient. Quantiles describe a histogram in a fixed number of values whatever the
scale (gradients span orders of magnitude between layers and initializers).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from initstudy.nn.model import MLP
from initstudy.nn.propagation import dead_or_saturated

PROBE_SIZE = 300
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
COLUMNS = ["step", "layer", "statistic", "value"]


def probe(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe: the first PROBE_SIZE images of a split (all of them if it is smaller)."""
    return images[:PROBE_SIZE], labels[:PROBE_SIZE]


def _summary(prefix: str, values: torch.Tensor) -> dict[str, float]:
    flat = values.detach().flatten().double()
    quantiles = torch.quantile(flat, torch.tensor(QUANTILES, dtype=torch.float64, device=flat.device))
    stats = {f"{prefix}_mean": float(flat.mean()), f"{prefix}_std": float(flat.std())}
    stats.update(
        {
            f"{prefix}_q{round(q * 100):02d}": float(v)
            for q, v in zip(QUANTILES, quantiles.tolist(), strict=True)
        }
    )
    return stats


def measure(
    model: MLP, images: torch.Tensor, labels: torch.Tensor, step: int
) -> list[dict[str, float | int | str]]:
    """One probe of ``model`` at optimizer step ``step``: rows of layer_stats.csv (every hidden layer)."""
    with torch.enable_grad():
        passed = model.forward_with_intermediates(images)
        loss = F.cross_entropy(passed.logits, labels)
        hidden_weights = [block[0].weight for block in model.hidden]
        grads = torch.autograd.grad(loss, [*passed.pre_activations, *hidden_weights])
    depth = len(passed.pre_activations)
    rows: list[dict[str, float | int | str]] = []
    for index in range(depth):
        activations = passed.activations[index].detach()
        stats = _summary("act", activations)
        share = dead_or_saturated(activations, model.activation_name)
        if share is not None:
            stats["dead_or_saturated"] = share
        stats.update(_summary("grad_pre", grads[index]))
        stats["weight_grad_std"] = float(grads[depth + index].double().std())
        rows.extend({"step": step, "layer": index + 1, "statistic": name, "value": value}
                    for name, value in stats.items())  # fmt: skip
    return rows


def frame(rows: list[dict[str, float | int | str]]) -> pd.DataFrame:
    """layer_stats.csv's table."""
    return pd.DataFrame(rows, columns=COLUMNS)
