"""Numerics profiles: which machine-dependent floating-point choices a run pins, applied before torch starts.

The same commit, config and seed gave different accuracies on two x86-64 machines (issue #17), because
torch's CPU path chooses its arithmetic per machine, in three libraries, each once at start-up:

- ATen's vectorized kernels (softmax, reductions, Adam's fused step, normal draws) are compiled for
  ``default``/``avx2``/``avx512`` and picked by the CPU; the vector width changes summation order.
  ``ATEN_CPU_CAPABILITY`` pins it, read when torch is imported.
- MKL (every fp32 matmul: forward, both backward products) dispatches on the CPU model and cache sizes.
  ``MKL_CBWR`` (conditional numerical reproducibility) pins it, read at MKL's first call. Only
  ``COMPATIBLE`` is honoured on non-Intel CPUs (``AVX2`` silently becomes ``AUTO`` there), and Intel's
  thread-count-independent ``STRICT`` mode exists only for the AVX2/AVX-512 branches: so a profile that
  must agree between Intel and AMD fixes the thread count instead.
- oneDNN is not on the fp32 training path (``float32_matmul_precision="highest"`` keeps matmuls on MKL);
  ``ONEDNN_MAX_CPU_ISA`` still pins it for any op that reaches it.

Per-process state, set for every job (launchers reuse processes): the intra-op thread count (matmul
blocking and parallel reductions depend on it), flush-to-zero of subnormals (per *thread* CPU state: worker
threads created before ``torch.set_flush_denormal`` keep the old mode, so it is set before the thread pool
starts and checked on every thread), deterministic algorithms and, on GPUs, cuBLAS's workspace
(``CUBLAS_WORKSPACE_CONFIG``, read at CUDA initialisation). GPU results differ from CPU results by design
(other kernels, other summation orders); a profile makes each device reproducible, not the two equal.

This module imports torch only inside functions, so that entry points can apply a profile first:
:func:`apply_before_torch` in the launching process (whose environment every launcher's worker inherits:
loky, submitit, SLURM's default ``--export=ALL``), then :func:`apply_in_process` in each job, which refuses
to run if the effective state differs from the profile.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from initstudy.core.errors import ConfigError

log = logging.getLogger(__name__)

PROFILE_ENV = "INITSTUDY_NUMERICS"  # the applied profile's name, inherited by every process a launcher starts
CAPABILITIES = ("default", "avx2", "avx512")
# The CPU flags each ATen capability executes; ATEN_CPU_CAPABILITY=avx512 on a CPU without them is SIGILL.
CAPABILITY_FLAGS = {
    "default": set(),
    "avx2": {"avx2", "fma"},
    "avx512": {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"},
}
MATMUL_PRECISIONS = ("highest", "high", "medium")


@dataclass(frozen=True)
class NumericsProfile:
    """One option of the ``numerics`` config group. ``None`` leaves a choice to the machine."""

    name: str
    cpu_capability: str | None = None  # ATEN_CPU_CAPABILITY
    mkl_cbwr: str | None = None  # MKL_CBWR
    onednn_max_cpu_isa: str | None = None  # ONEDNN_MAX_CPU_ISA (and its old name DNNL_MAX_CPU_ISA)
    num_threads: int | None = None  # ATen and MKL intra-op threads; None = the cores this job may use
    flush_denormal: bool = True
    deterministic: bool = True  # torch.use_deterministic_algorithms (and Lightning's deterministic flag)
    float32_matmul_precision: str = "highest"  # anything lower lets fp32 matmuls use TF32/bf16 kernels
    cublas_workspace_config: str | None = ":4096:8"  # deterministic cuBLAS; read at CUDA initialisation

    def __post_init__(self) -> None:
        if self.cpu_capability is not None and self.cpu_capability not in CAPABILITIES:
            raise ValueError(f"cpu_capability must be one of {', '.join(CAPABILITIES)} or null")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or self.num_threads < 1):
            raise ValueError("num_threads must be a positive integer or null")
        if self.float32_matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"float32_matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}")

    @property
    def pinned(self) -> bool:
        """Whether the profile claims machine-independent results: then its effective state is verified."""
        return None not in (self.cpu_capability, self.mkl_cbwr, self.num_threads)


def load(name: str, root: Path) -> NumericsProfile:
    """An option of the group by name, read from ``<root>/conf/numerics/<name>.yaml`` (no Hydra composition:
    for processes that are not entry points, such as the test session)."""
    import yaml

    return from_config(yaml.safe_load((root / "conf" / "numerics" / f"{name}.yaml").read_text()))


def from_config(node: Any) -> NumericsProfile:
    """The profile of a composed config's ``numerics`` node (a DictConfig or a mapping)."""
    values = {key: value for key, value in dict(node).items() if key != "_target_"}
    try:
        return NumericsProfile(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid numerics {values.get('name')!r}: {error}") from None


# ---- environment (before torch) ---------------------------------------------------------------------------
def environment(profile: NumericsProfile) -> dict[str, str]:
    """The variables the profile sets; launched processes inherit them. Unpinned choices are left out."""
    env = {PROFILE_ENV: profile.name}
    if profile.cpu_capability:
        env["ATEN_CPU_CAPABILITY"] = profile.cpu_capability
    if profile.mkl_cbwr:
        env["MKL_CBWR"] = profile.mkl_cbwr
    if profile.onednn_max_cpu_isa:
        env["ONEDNN_MAX_CPU_ISA"] = env["DNNL_MAX_CPU_ISA"] = profile.onednn_max_cpu_isa
    if profile.num_threads:
        # The initial pool size of every process; MKL's reproducibility conditions ask for no dynamic teams.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(profile.num_threads)
        env["MKL_DYNAMIC"] = env["OMP_DYNAMIC"] = "FALSE"
    if profile.cublas_workspace_config:
        env["CUBLAS_WORKSPACE_CONFIG"] = profile.cublas_workspace_config
    return env


# Every variable a profile may set: those a process inherited from a launcher that applied another profile are
# removed before this one applies (a `fast` job under a `portable` parent must not run pinned kernels).
MANAGED_VARIABLES = (
    "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "MKL_DYNAMIC", "OMP_DYNAMIC", "CUBLAS_WORKSPACE_CONFIG",
)  # fmt: skip
# Read once when torch (ATen, MKL, oneDNN) initialises: changing them afterwards changes nothing. The thread
# variables are not among them (apply_in_process sets the count itself); CUBLAS_WORKSPACE_CONFIG is read at
# CUDA initialisation, checked separately.
IMPORT_TIME_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def import_time_environment(profile: NumericsProfile) -> dict[str, str]:
    """The part of :func:`environment` that must be in place before torch is imported."""
    return {k: v for k, v in environment(profile).items() if k in IMPORT_TIME_VARIABLES}


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux); None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith("flags")), None)
    return set(line.split(":", 1)[1].split()) if line else None


def check_cpu_supports(profile: NumericsProfile) -> None:
    """Refuse a capability the CPU cannot execute (torch would accept it and die of SIGILL)."""
    if profile.cpu_capability is None:
        return
    needed = CAPABILITY_FLAGS[profile.cpu_capability]
    if needed and platform.machine().lower() not in ("x86_64", "amd64"):
        raise ConfigError(
            f"numerics={profile.name} pins x86-64 {profile.cpu_capability} kernels; this is "
            f"{platform.machine()}: use numerics=fast (results then differ from x86-64 runs)"
        )
    flags = cpu_flags()
    missing = sorted(needed - flags) if flags is not None else []
    if missing:
        raise ConfigError(
            f"numerics={profile.name} pins ATen {profile.cpu_capability} kernels but this CPU lacks "
            f"{', '.join(missing)}: use numerics=fast (results then differ from {profile.name} runs)"
        )


def apply_shared(profiles: Sequence[NumericsProfile]) -> NumericsProfile:
    """:func:`apply_before_torch` for the jobs of one launch: one process runs several jobs and torch reads
    the import-time part of the environment once, so every job must share that part."""
    if len({tuple(import_time_environment(p).items()) for p in profiles}) > 1:
        raise ConfigError(
            "the jobs of one sweep must share the numerics environment (read once when torch starts): "
            f"{', '.join(sorted({p.name for p in profiles}))} differ; run one sweep per profile"
        )
    apply_before_torch(profiles[0])
    return profiles[0]


def apply_before_torch(profile: NumericsProfile) -> None:
    """Set the profile's environment in this process, for torch and for every process launched from it.

    Call before ``import torch``. If torch is already imported, the import-time variables can no longer
    change anything: refuse (one line) unless they already hold the profile's values, and leave them be.
    """
    check_cpu_supports(profile)
    wanted = environment(profile)
    if "torch" in sys.modules:
        _refuse_if_stale(profile, import_time_environment(profile))
        _refuse_if_cuda_started(profile)
        wanted = {k: v for k, v in wanted.items() if k not in IMPORT_TIME_VARIABLES}
    elif os.environ.get(PROFILE_ENV, profile.name) != profile.name:
        for key in set(MANAGED_VARIABLES) - set(wanted):  # inherited from a parent under another profile
            os.environ.pop(key, None)
    changed = {k: os.environ[k] for k, v in wanted.items() if k in os.environ and os.environ[k] != v}
    if changed:
        log.info(
            "numerics=%s replaces %s", profile.name, ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
        )
    os.environ.update(wanted)
    if "torch" in sys.modules:
        check_capability(profile)


def _refuse_if_stale(profile: NumericsProfile, wanted: dict[str, str]) -> None:
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            raise ConfigError(
                f"numerics={profile.name} needs {key}={value} before torch is imported, but torch is already "
                f"imported with {key}={os.environ.get(key, '(unset)')}; apply the profile first (or export it)"
            )


def _refuse_if_cuda_started(profile: NumericsProfile) -> None:
    import torch

    wanted = profile.cublas_workspace_config
    if wanted and torch.cuda.is_initialized() and os.environ.get("CUBLAS_WORKSPACE_CONFIG") != wanted:
        raise ConfigError(
            f"numerics={profile.name} needs CUBLAS_WORKSPACE_CONFIG={wanted} before CUDA starts, but CUDA "
            f"is already initialised with {os.environ.get('CUBLAS_WORKSPACE_CONFIG', '(unset)')}"
        )


# ---- per process (after torch) ---------------------------------------------------------------------------
def check_capability(profile: NumericsProfile) -> None:
    """The kernels torch actually dispatches to are the profile's."""
    import torch

    actual = torch.backends.cpu.get_cpu_capability().lower()
    if profile.cpu_capability and actual != profile.cpu_capability:
        raise ConfigError(
            f"numerics={profile.name} needs ATen {profile.cpu_capability} kernels but torch runs {actual} "
            f"(ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')} when it was imported)"
        )


def resolve_threads(profile: NumericsProfile) -> int:
    """The profile's count; else $OMP_NUM_THREADS (a launcher's share per job: loky's cpus // n_jobs, the SLURM
    launcher's cpus_per_task), or this process's CPUs (its affinity: a SLURM job's share, not the node)."""
    if profile.num_threads:
        return profile.num_threads
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or available


def denormals_flushed() -> str:
    """``all``, ``none`` or ``mixed``: whether subnormal results are flushed to zero, on every intra-op thread.

    Flush-to-zero is per-thread CPU state (MXCSR): an OpenMP worker started before set_flush_denormal keeps
    the old mode. This product is large enough to be split over all threads and exactly subnormal."""
    import torch

    product = torch.full((1 << 18,), 1e-30) * 1e-10
    zeros = int((product == 0).sum())
    return "all" if zeros == product.numel() else "none" if zeros == 0 else "mixed"


def apply_in_process(profile: NumericsProfile) -> int:
    """Per-job settings after torch is imported; returns the thread count. For a pinned profile, verify
    that the effective state is the profile's and refuse (one line) otherwise."""
    import torch

    if profile.pinned:
        _refuse_if_stale(profile, import_time_environment(profile))
        check_capability(profile)
    threads = resolve_threads(profile)
    torch.set_num_threads(threads)
    # Before any parallel work of this job: workers the pool starts from now on inherit the mode.
    supported = torch.set_flush_denormal(profile.flush_denormal)
    torch.use_deterministic_algorithms(profile.deterministic)
    torch.set_float32_matmul_precision(profile.float32_matmul_precision)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing: not reproducible
        torch.backends.cudnn.deterministic = profile.deterministic
    if profile.pinned:
        _verify_threads_and_denormals(profile, threads, supported)
    return threads


def _verify_threads_and_denormals(profile: NumericsProfile, threads: int, supported: bool) -> None:
    import torch

    if torch.get_num_threads() != threads:
        raise ConfigError(
            f"numerics={profile.name} needs {threads} torch threads, got {torch.get_num_threads()}"
        )
    if profile.flush_denormal and not supported:
        raise ConfigError(f"numerics={profile.name} flushes subnormals to zero, which this CPU cannot do")
    expected = "all" if profile.flush_denormal else "none"
    actual = denormals_flushed()
    if actual != expected:
        raise ConfigError(
            f"numerics={profile.name}: subnormals flushed on {actual} threads, expected {expected}; torch's "
            "thread pool started before the profile was applied (apply it before any parallel torch work)"
        )


# ---- provenance -------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    names = (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    return next(names, platform.processor() or platform.machine())


def describe(profile: NumericsProfile | None = None, device: str = "cpu") -> dict[str, Any]:
    """The arithmetic in effect in this process (numerics.json): what the profile sets and the device, so a
    mismatch between two runs is visible. Only what decides the numbers is here, so that the file is the same on
    every machine that runs the same profile (DVC hashes it); the machine itself is :func:`machine`."""
    import torch

    described: dict[str, Any] = {
        "profile": profile.name if profile else os.environ.get(PROFILE_ENV, "none"),
        "device": device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability().lower(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "unset"),
        "onednn_max_cpu_isa": os.environ.get(
            "ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "unset")
        ),
        "torch_threads": torch.get_num_threads(),
        "flush_denormal": denormals_flushed(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.startswith("cuda"):
        described["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG", "unset")
    if profile is not None:
        described["settings"] = asdict(profile)
    return described


def machine(device: str = "cpu") -> dict[str, Any]:
    """Which machine and build ran it (provenance.json and MLflow tags): differs between two machines that
    produce the same bytes, so it is kept apart from the results."""
    import torch

    facts: dict[str, Any] = {
        "torch_version": torch.__version__,
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "libc": " ".join(platform.libc_ver()).strip() or "unknown",
    }
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        facts.update(
            gpu=torch.cuda.get_device_name(index),
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
        )
    return facts


def mlflow_tags(described: dict[str, Any]) -> dict[str, str]:
    """:func:`describe` as flat MLflow tags (``numerics.*``); the profile's settings are run params already."""
    return {f"numerics.{key}": str(value) for key, value in described.items() if key != "settings"}
