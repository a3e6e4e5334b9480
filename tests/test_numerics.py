"""Numerics profiles: the environment, the refusals, and byte-identical runs across simulated machines.

A "machine" here is what decides torch's CPU arithmetic on its own: the ATen kernel level the CPU offers
(``ATEN_CPU_CAPABILITY``, default / avx2 / avx512 where the CPU has it) and the cores a job may use (CPU
affinity: 1 or 2). Under ``numerics=portable`` every such run must write the same metrics.json and history.csv
bytes; under ``numerics=fast`` at least two must differ, or the test could not fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, python_module
from initstudy.config import numerics
from initstudy.config.compose import compose_config
from initstudy.config.validate import validate
from initstudy.core.errors import ConfigError
from initstudy.sweep import jobs


# ---- profiles and their environment -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["portable", "fast"])
def test_each_profile_composes_validates_and_is_hashed(at_repo: Path, name: str) -> None:
    from initstudy.config.compose import config_hash

    cfg = compose_config([f"numerics={name}"])
    validate(cfg)
    profile = numerics.from_config(cfg.numerics)
    assert profile.name == name
    other = compose_config([f"numerics={'fast' if name == 'portable' else 'portable'}"])
    assert config_hash(cfg) != config_hash(other)  # the profile is part of the run identity


def test_portable_pins_every_import_time_choice_and_the_thread_count(at_repo: Path) -> None:
    profile = numerics.from_config(compose_config([]).numerics)  # params.yaml's default
    env = numerics.environment(profile)
    assert profile.name == "portable" and profile.pinned
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["MKL_CBWR"] == "COMPATIBLE"  # the one MKL branch run alike on Intel and AMD
    assert env["ONEDNN_MAX_CPU_ISA"] == env["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(profile.num_threads)
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    fast = numerics.load("fast", at_repo)
    assert not fast.pinned and numerics.import_time_environment(fast) == {}


def test_thread_count_is_the_profiles_else_the_jobs_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numerics.num_threads is the one thread count: fixed by portable, else what the launcher gives each job
    ($OMP_NUM_THREADS: loky's cpus // n_jobs, the SLURM launcher's cpus_per_task), else the job's cores."""
    fast = numerics.load("fast", REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert numerics.resolve_threads(fast) == 3
    assert numerics.resolve_threads(numerics.load("portable", REPO)) == 1
    assert numerics.resolve_threads(replace(fast, num_threads=2)) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert numerics.resolve_threads(fast) == len(os.sched_getaffinity(0))


def test_bad_profile_values_are_one_line_config_errors(at_repo: Path) -> None:
    with pytest.raises(ConfigError, match=r"cpu_capability must be one of default, avx2, avx512"):
        validate(compose_config(["numerics.cpu_capability=avx3"]))
    with pytest.raises(ConfigError, match=r"unknown config key 'numerics.threads'"):
        validate(compose_config(["+numerics.threads=2"]))


def test_a_sweep_over_profiles_with_different_environments_is_refused(at_repo: Path) -> None:
    with pytest.raises(ConfigError, match=r"must share the numerics environment.*fast, portable differ"):
        jobs.apply_for_sweep(["numerics=portable,fast"], multirun=True)


def test_capability_the_cpu_lacks_is_refused_before_torch_would_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    monkeypatch.setattr(numerics.platform, "machine", lambda: "x86_64")
    profile = numerics.NumericsProfile("wide", cpu_capability="avx512")
    with pytest.raises(ConfigError, match=r"lacks avx512bw, avx512dq, avx512f, avx512vl: use numerics=fast"):
        numerics.check_cpu_supports(profile)


# ---- refusals once torch runs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module",
    [
        "initstudy.train.__main__",
        "initstudy.diagnose.__main__",
        "initstudy.sweep.preflight",
        "initstudy.runs.rundir",
        "hydra_plugins.initstudy_stacked.stacked_launcher",
    ],
)
def test_what_runs_before_the_profile_is_applied_does_not_import_torch(module: str) -> None:
    """The pre-flight sets the profile's import-time environment (ATEN_CPU_CAPABILITY, ...) before torch
    starts: an entry point, the pre-flight, the run-folder code or the launcher plugin that imported torch
    at import time would make every portable sweep refuse to start."""
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0, module


def test_applying_a_different_profile_after_torch_started_is_refused() -> None:
    import torch  # noqa: F401  (already imported by the session, under portable: see conftest)

    other = numerics.NumericsProfile("other", cpu_capability="avx2", mkl_cbwr="AVX2,STRICT", num_threads=1)
    before = dict(os.environ)
    with pytest.raises(ConfigError, match=r"needs MKL_CBWR=AVX2,STRICT before torch is imported") as error:
        numerics.apply_before_torch(other)
    assert "\n" not in str(error.value)
    assert dict(os.environ) == before
    with pytest.raises(ConfigError, match=r"needs MKL_CBWR=AVX2,STRICT"):
        numerics.apply_in_process(other)


def test_a_job_process_without_the_profile_is_refused(tmp_path: Path) -> None:
    """A process that imported torch under the machine's own choices cannot run a portable job."""
    code = (
        "import torch\nfrom pathlib import Path\nfrom initstudy.config import numerics\n"
        f"numerics.apply_in_process(numerics.load('portable', Path({str(REPO)!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=clean_environment(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert (
        "ConfigError: numerics=portable needs ATEN_CPU_CAPABILITY=avx2 before torch is imported"
        in result.stderr
    )


def test_in_process_settings_and_description() -> None:
    profile = numerics.load("portable", REPO)
    threads = numerics.apply_in_process(profile)
    described = numerics.describe(profile)
    assert threads == profile.num_threads == described["torch_threads"]
    assert described["cpu_capability"] == "avx2"
    assert described["mkl_cbwr"] == "COMPATIBLE"
    assert described["flush_denormal"] == "all"  # on every intra-op thread, not just this one
    assert described["deterministic_algorithms"] is True
    assert described["profile"] == "portable" and described["device"] == "cpu"
    tags = numerics.mlflow_tags(described)
    assert tags["numerics.cpu_capability"] == "avx2" and "numerics.settings" not in tags


def test_a_fast_job_under_a_portable_parent_drops_the_inherited_pins() -> None:
    env = {**clean_environment(), **numerics.environment(numerics.load("portable", REPO))}
    code = (
        "import os\nfrom pathlib import Path\nfrom initstudy.config import numerics\n"
        f"numerics.apply_before_torch(numerics.load('fast', Path({str(REPO)!r})))\n"
        "print(os.environ.get('ATEN_CPU_CAPABILITY'), os.environ.get('MKL_CBWR'), os.environ['INITSTUDY_NUMERICS'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["None", "None", "fast"], result.stderr


# ---- the same bytes on every simulated machine ----------------------------------------------------------
def clean_environment() -> dict[str, str]:
    """This session's environment without any profile's variables: what a fresh shell on a machine has."""
    drop = {*numerics.MANAGED_VARIABLES, numerics.PROFILE_ENV, "MLFLOW_TRACKING_URI"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    return env


def machines() -> list[tuple[str, int]]:
    """(ATen capability the machine would pick, cores it gives the job): a reference machine and one step
    away from it along each axis (avx512 only where the CPU has it: elsewhere those kernels are SIGILL)."""
    cores = min(2, len(os.sched_getaffinity(0)))
    simulated = [("avx2", cores), ("default", cores)]
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= (numerics.cpu_flags() or set()):
        simulated.append(("avx512", cores))
    return simulated + ([("avx2", 1)] if cores > 1 else [])


def train_on(repo: Path, profile: str, capability: str, cores: int) -> dict[str, bytes | str]:
    """One tiny run (1 epoch of synthetic digits) in a fresh process, as a machine with ``capability``
    kernels and ``cores`` CPUs would start it; returns its result files' bytes and its recorded numerics."""
    label = f"{profile}-{capability}-{cores}"
    env = {**clean_environment(), "ATEN_CPU_CAPABILITY": capability}
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    command = python_module("initstudy.train", f"numerics={profile}", "logger=offline", "init=he_uniform",
                            f"hydra.run.dir=runs/{label}")  # fmt: skip
    result = subprocess.run(
        command, cwd=repo, env=env, capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )  # fmt: skip
    assert result.returncode == 0, f"{label}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    run_dir = repo / "runs" / label
    described = OmegaConf.load(run_dir / "numerics.json")
    return {
        "metrics.json": (run_dir / "metrics.json").read_bytes(),
        "history.csv": (run_dir / "history.csv").read_bytes(),
        "capability": described.cpu_capability,
        "threads": str(described.torch_threads),
    }


@pytest.mark.slow
def test_portable_results_are_byte_identical_across_simulated_machines_and_fast_ones_are_not(
    synthetic_data_repo: Path,
) -> None:
    portable = {machine: train_on(synthetic_data_repo, "portable", *machine) for machine in machines()}
    for machine, run in portable.items():  # the profile's kernels and threads, not the machine's
        assert (run["capability"], run["threads"]) == ("avx2", "1"), machine
    reference = portable[machines()[0]]
    for machine, run in portable.items():
        assert run["metrics.json"] == reference["metrics.json"], machine
        assert run["history.csv"] == reference["history.csv"], machine

    # The control: the machine's own choices. ATen's kernel level alone changes the bytes (seen); the thread
    # count does too on longer runs (benchmarks/numerics_matrix.py), not reliably in 19 steps.
    fast = {machine: train_on(synthetic_data_repo, "fast", *machine) for machine in machines()[:2]}
    assert {run["capability"] for run in fast.values()} == {"avx2", "default"}  # the simulation took effect
    assert len({run["metrics.json"] + run["history.csv"] for run in fast.values()}) > 1, (
        "numerics=fast gave the same bytes on every simulated machine: the test cannot tell the profiles apart"
    )


def test_the_report_says_on_what_device_and_profile_its_runs_were_made(tmp_path: Path) -> None:
    import json

    import pandas as pd

    from initstudy.report.markdown import setup_section
    from initstudy.runs.results import _numerics_of

    (tmp_path / "numerics.json").write_text(json.dumps({"profile": "portable", "device": "cpu"}))
    assert _numerics_of(tmp_path) == {"device": "cpu", "numerics": "portable"}
    assert _numerics_of(tmp_path / "older-run") == {"device": "unknown", "numerics": "unknown"}
    runs = pd.DataFrame({"init": ["zeros"] * 3, "seed": [0, 1, 2], "device": ["cpu", "cpu", "cuda:0"],
                         "numerics": ["portable"] * 3})  # fmt: skip
    text = setup_section({}, runs)
    assert "2 runs on cpu under `numerics=portable`; 1 runs on cuda:0 under `numerics=portable`" in text
