"""Provenance: exact versions from installed metadata without importing the packages, and the lock's digest."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib import metadata

from packaging.version import Version

from conftest import REPO
from initstudy.core import provenance


def test_package_versions_are_the_installed_ones():
    versions = provenance.package_versions()
    assert list(versions) == list(provenance.RESULT_PACKAGES)
    for name, version in versions.items():
        assert version == metadata.version(name)
        Version(version)  # a real version string, not a placeholder


def test_a_missing_package_is_named_not_installed(monkeypatch):
    monkeypatch.setattr(provenance, "RESULT_PACKAGES", ("numpy", "no-such-distribution-initstudy"))
    versions = provenance.package_versions()
    assert versions["no-such-distribution-initstudy"] == "not installed"
    assert versions["numpy"] == metadata.version("numpy")


def test_provenance_imports_none_of_the_packages():
    code = (
        "import sys; from initstudy.core import provenance; provenance.package_versions(); provenance.lock_digest(); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'mlflow', 'dvc', 'hydra', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_lock_digest(tmp_path):
    assert provenance.lock_digest(tmp_path) is None
    (tmp_path / "requirements.lock").write_text("torch==2.14.1 \\\n    --hash=sha256:00\n")
    expected = hashlib.sha256((tmp_path / "requirements.lock").read_bytes()).hexdigest()
    assert provenance.lock_digest(tmp_path) == expected


def test_lock_digest_defaults_to_this_checkout():
    assert provenance.CHECKOUT == REPO
    assert provenance.lock_digest() == hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
