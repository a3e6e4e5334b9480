"""How figures look across every report: one colour per initializer, by name, so that a figure showing a
subset, or another paper's report, paints each initializer the same, and one resolution."""

from __future__ import annotations

from collections.abc import Iterable

DPI = 110


# Okabe & Ito's colour-blind-safe set (without its orange, which sits too close to vermillion), then Paul Tol's
# colour-blind-safe "muted" hues that stay apart from those. Each initializer option (conf/init/) owns one
# colour by name, so that a figure showing a subset, or another report, paints it the same.
INIT_COLOURS = {
    "zeros": "#444444",  # dark grey: the constant predictor, a reference rather than a contender
    "glorot_uniform": "#0072B2",  # blue
    "he_uniform": "#D55E00",  # vermillion
    "random_normal": "#009E73",  # bluish green
    "glorot_normal": "#56B4E9",  # sky blue
    "he_normal": "#CC79A7",  # reddish purple
    "lecun_uniform": "#332288",  # indigo
    "lecun_normal": "#999933",  # olive
    "orthogonal": "#882255",  # wine
    "torch_default": "#117733",  # dark green
    "truncated_normal": "#DDCC77",  # sand
    "lsuv": "#AA4499",  # purple
}


# For names no option owns: handed out in this order, then the colours of options absent from the figure.
SPARE_COLOURS = ("#F0E442", "#88CCEE", "#CC6677", "#999999", "#44AA99")


def colour_map(inits: Iterable[str]) -> dict[str, str]:
    """A fixed colour per initializer name.

    Known names keep theirs whatever else a figure shows; unknown names (a new option not yet in the table)
    take the spare colours first, then those of known options absent from this figure, in sorted-name order,
    so a figure never paints two names alike while at most 17 are shown (beyond that, colours repeat).
    """
    names = list(dict.fromkeys(inits))
    colours = {name: INIT_COLOURS[name] for name in names if name in INIT_COLOURS}
    taken = set(colours.values())
    free = [c for c in (*SPARE_COLOURS, *INIT_COLOURS.values()) if c not in taken]
    unknown = sorted(name for name in names if name not in INIT_COLOURS)
    everything = (*INIT_COLOURS.values(), *SPARE_COLOURS)
    for index, name in enumerate(unknown):
        colours[name] = free[index] if index < len(free) else everything[index % len(everything)]
    return {name: colours[name] for name in names}
