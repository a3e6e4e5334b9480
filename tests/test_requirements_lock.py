"""requirements.lock is the output of pyproject.toml: every declared requirement pinned, hashed, in range."""

from __future__ import annotations

import re
import tomllib
from itertools import takewhile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def parse_lock(text: str) -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of sha256 hashes)} of a pip-compile --generate-hashes file."""
    entries: dict[str, tuple[str, int]] = {}
    name = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            match = PIN.match(line)
            assert match, f"requirements.lock: not an exact pin: {line!r}"
            name = canonicalize_name(match[1])
            assert name not in entries, f"requirements.lock: {name} pinned twice"
            entries[name] = (match[2], 0)
        assert name is not None, f"requirements.lock: option or hash before the first pin: {line!r}"
        version, hashes = entries[name]
        entries[name] = (version, hashes + len(HASH.findall(line)))
    return entries


def declared() -> list[Requirement]:
    """The project's dependencies, its dev extra and its build backend: what `make lock` resolves."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["dev"],
        *project["build-system"]["requires"],
    ]
    return [Requirement(spec) for spec in specs]


LOCK = parse_lock((REPO / "requirements.lock").read_text())


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_declared_requirement_is_locked_in_range(requirement):
    name = canonicalize_name(requirement.name)
    assert name in LOCK, f"{requirement} is in pyproject.toml but not in requirements.lock: run `make lock`"
    version, hashes = LOCK[name]
    assert requirement.specifier.contains(Version(version), prereleases=True), (
        f"requirements.lock pins {name}=={version}, outside pyproject.toml's {requirement}: run `make lock`"
    )
    assert hashes >= 1


def test_every_locked_package_is_hashed():
    assert len(LOCK) > 100  # the whole closure, torch's nvidia-* libraries included
    unhashed = sorted(name for name, (_, hashes) in LOCK.items() if hashes == 0)
    assert not unhashed, f"pinned without --hash in requirements.lock: {unhashed}"


def test_installer_and_build_backend_are_locked():
    """`make install` takes the locked pip first and builds the project with the locked setuptools."""
    assert {"pip", "setuptools", "pip-tools"} <= LOCK.keys()


def test_lock_names_no_index_or_local_path():
    """Where packages come from is pip's configuration on each machine, not the lock's."""
    text = (REPO / "requirements.lock").read_text()
    assert not re.search(r"--(extra-)?index-url|--find-links|--trusted-host|file://", text)


def test_lock_header_names_its_platform():
    lines = (REPO / "requirements.lock").read_text().splitlines()
    header = "\n".join(takewhile(lambda line: line.startswith("#"), lines))
    assert "CPython 3.11" in header and "Linux x86_64" in header and "make lock" in header
