"""``python -m initstudy.check``: the first step of ``make study``, before DVC reads anything (a module of its
own, outside the packages whose folders are DVC dependencies of the stages).

DVC parses params.yaml and dvc.yaml itself before any stage runs, and a YAML syntax error in either is an
8-line error of DVC's that points nowhere near the fix. This step parses both and composes the study's
default config the way every stage will, and says what is wrong in one line (exit status 2) while nothing
has been touched yet.
"""

from __future__ import annotations

import sys

import yaml

from initstudy.config.compose import check_params_file, compose_config
from initstudy.core.errors import ConfigError
from initstudy.core.paths import repo_root

PIPELINE = "dvc.yaml"


def check_pipeline_file() -> None:
    """dvc.yaml parses as YAML and is a mapping (what DVC's schema then checks is DVC's business)."""
    path = repo_root() / PIPELINE
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(
            f"{path} cannot be read ({error.strerror}): run from the study's root folder"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{PIPELINE} is not valid YAML{where}: {problem}") from None
    if not isinstance(content, dict) or "stages" not in content:
        raise ConfigError(
            f"{PIPELINE} must be a YAML mapping with a 'stages' key, got {type(content).__name__}"
        )


def main() -> None:
    try:
        check_params_file()
        check_pipeline_file()
        compose_config([])
    except ConfigError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
