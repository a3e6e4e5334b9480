"""A tuning sweep's search space, checked before anything runs.

Optuna's sweeper turns each swept override into a distribution only once the sweep has started (after the
pre-flight has taken the lock and written the manifest), and a range Optuna refuses then ends in a traceback.
These are the rules of the distributions it builds (``hydra/sweeper=tune``, docs/training.md):
``interval(low,high)`` needs low <= high, and low > 0 under ``tag(log, ...)``, the only tag it reads;
``range(start,stop[,step])`` needs start <= stop and step > 0 (``shuffle(range(...))``: at least one value).
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig

from initstudy.core.errors import ConfigError
from initstudy.sweep import jobs as sweep_jobs

TAGS = {"log"}  # the tags Optuna's sweeper reads; any other would be ignored without a word


def check(hydra_cfg: DictConfig) -> None:
    """Every swept override of the sweep (``hydra.sweeper.params`` and the command line) is a search space
    Optuna accepts; one-line :class:`ConfigError` otherwise."""
    arguments = sweep_jobs.sweeper_arguments(hydra_cfg) + sweep_jobs.as_given(hydra_cfg.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except HydraException as error:
        raise ConfigError(" ".join(str(error).split())) from None
    for override in overrides:
        if override.is_interval_sweep():
            _check_interval(override)
        elif override.is_range_sweep():
            _check_range(override)


def _refuse(override: Override, allowed: str) -> None:
    raise ConfigError(f"invalid search space {override.input_line}: {allowed}")


def _check_interval(override: Override) -> None:
    interval = override.value()
    assert isinstance(interval, IntervalSweep)
    unknown = sorted(set(interval.tags) - TAGS)
    if unknown:
        _refuse(override, f"unknown tag {', '.join(unknown)}; allowed: tag(log, interval(low,high)) or none")
    if not interval.start <= interval.end:
        _refuse(override, "an interval needs low <= high, e.g. interval(1e-4,1e-1)")
    if "log" in interval.tags and interval.start <= 0:
        _refuse(override, "a log interval needs low > 0, e.g. tag(log,interval(1e-4,1e-1))")


def _check_range(override: Override) -> None:
    values = override.value()
    assert isinstance(values, RangeSweep)
    if values.shuffle:
        if not list(override.sweep_iterator()):
            _refuse(
                override, "the range holds no value; it needs start < stop with step > 0, e.g. range(1,5)"
            )
        return
    if not (values.step > 0 and values.start <= values.stop):
        _refuse(override, "a range needs start <= stop and step > 0, e.g. range(1,5) or range(0,1,0.25)")
