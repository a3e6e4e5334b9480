"""``python -m initstudy.train``: Hydra's command line for :func:`initstudy.train.app.hydra_job`.

The Hydra application is made when :func:`main` runs, with the study's root as its config folder, so that
``main`` may be called from any working directory a test or tool chooses (Hydra's decorator at import
would fix the folder when the module is first imported). ``--help`` and its kind are answered from the
configs alone; a refusal is one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import hydra
from hydra.errors import HydraException

from initstudy.config.compose import CONFIG_GROUPS_DIR, PRIMARY_CONFIG, compose_config, one_line
from initstudy.core import collector, signals
from initstudy.core.errors import ConfigError, no_space
from initstudy.core.paths import repo_root
from initstudy.sweep import jobs as sweep
from initstudy.sweep import preflight
from initstudy.train.app import hydra_job

# Hydra's flags that answer without running anything.
ANSWER_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}


def answers_without_running(argv: Sequence[str]) -> bool:
    return any(arg.split("=", 1)[0] in ANSWER_FLAGS for arg in argv)


def answer_without_running(argv: Sequence[str]) -> None:
    """``--help``, ``--hydra-help``, ``--cfg``, ``--info``, shell completion: Hydra answers them from a primary
    config folder that holds params.yaml alone. Hydra's help lists every config group by walking that folder;
    the repo root holds .venv/, runs/ and data/ (minutes to walk), the config groups live in conf/ (found
    through hydra.searchpath), so the walk covers the configs and nothing else."""
    root = repo_root()
    with tempfile.TemporaryDirectory(prefix="initstudy-help-") as folder:
        (Path(folder) / "params.yaml").symlink_to(root / "params.yaml")
        for group in sorted((root / CONFIG_GROUPS_DIR).iterdir()):  # listed as the app's groups
            (Path(folder) / group.name).symlink_to(group)
        sys.argv = [sys.argv[0], *argv]
        hydra.main(config_path=folder, config_name="params", version_base="1.3")(lambda cfg: None)()


@contextlib.contextmanager
def errors_raised() -> Iterator[None]:
    """Hydra prints an error it meets (several lines) and exits 1, unless HYDRA_FULL_ERROR is set: then it
    raises it, and :func:`main` can say it in one line."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def explain(error: HydraException, argv: Sequence[str]) -> str:
    """One line for an error Hydra met while composing or sweeping: the project's own message for it where
    composing the same overrides gives one (unknown option, unknown key), else Hydra's text on one line."""
    overrides = [arg for arg in argv if not arg.startswith("-")]
    multirun = bool({"-m", "--multirun"} & set(argv))
    try:
        plain, swept = sweep.split_overrides(overrides)
        if swept and not multirun:
            return f"{swept[0]!r} sweeps several values: add --multirun (-m)"
        if "does not support sweep type" in str(error):  # Hydra's grid sweeper given a range
            tuned = next(o for o in sweep.parse(swept) if not o.is_discrete_sweep())
            return (f"{tuned.input_line!r} is a range to tune, not a list to sweep; the grid sweeps lists "
                    "(a,b,c, range(...), choice(...)); tune with a sweeper such as hydra/sweeper=tune")  # fmt: skip
        compose_config(plain)
    except ConfigError as composed:
        return str(composed)
    except StopIteration:
        pass
    return one_line(error, repo_root())


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if answers_without_running(argv):
        answer_without_running(argv)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.argv = [sys.argv[0], *argv]
    with signals.stopping_exits("initstudy.train"):  # after the sweep's cleanup: exit 128 + the signal
        try:
            with collector.start_up(), errors_raised():
                hydra.main(config_path=str(repo_root()), config_name=PRIMARY_CONFIG, version_base="1.3")(
                    hydra_job
                )()
        except BaseException as error:
            preflight.end_session(error)  # a stop signal: the runs it interrupted and the parent KILLED
            if isinstance(error, preflight.PREFLIGHT_ERRORS):
                preflight.refuse(str(error))
            if isinstance(error, HydraException):
                preflight.refuse(explain(error, argv))
            # Hydra's own files (.hydra/, multirun.yaml, the job log) are written outside the project's code.
            if full := no_space(error, preflight.output_folder()):
                preflight.refuse(full, status=1)
            raise


if __name__ == "__main__":
    main()
