"""Which machine-dependent settings change the study's numbers? An experiment, one fresh process per setting.

Each worker trains the project's own model (``initstudy.nn.model.MLP`` 784-256-128-10, the Glorot-uniform
initializer, Adam with the study's hyper-parameters, batch 64, cross-entropy) for ``--steps`` optimizer
steps on MNIST (synthetic digits if the files are absent), evaluates on the test split, and reports the
sha256 of the parameter bytes at step 0 (for every initializer family) and after training. The driver runs
the worker under every combination of

    ATEN_CPU_CAPABILITY  default / avx2 / avx512 (only where the CPU has AVX-512: elsewhere it crashes)
    torch threads        1 / 2
    MKL_CBWR             unset / AUTO / AVX2 / AVX2,STRICT / COMPATIBLE / COMPATIBLE,STRICT

plus single checks of oneDNN's ISA, torch.backends.mkldnn, flush-denormal and the Adam implementation, and,
in every worker, the output bytes of each kind of operation on the path (matmuls, reductions, softmax, Adam,
random draws) on exact inputs, and writes which axes change
the bytes to reports/numerics_matrix.json. The environment is set before the worker imports torch, as the
libraries read it once at start-up. ``python benchmarks/numerics_matrix.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS")
MKL_MODES = (None, "AUTO", "AVX2", "AVX2,STRICT", "COMPATIBLE", "COMPATIBLE,STRICT")
INITIALIZERS = ("glorot_uniform", "random_normal", "truncated_normal", "orthogonal", "lsuv")


# ---- worker (runs in a fresh process; torch is imported here, after the environment is set) -------------
def state_sha(model: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_data() -> tuple[Any, Any, Any, Any, str]:

    from initstudy.data.datamodule import load_mnist

    root = REPO / "data/raw"  # `dvc repro -s download` puts MNIST there; without it, synthetic data
    if (root / "MNIST/raw/train-images-idx3-ubyte").exists():
        x, y = load_mnist(root, train=True)
        tx, ty = load_mnist(root, train=False)
        return x, y, tx, ty, "MNIST"
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_synthetic

    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "initstudy-numerics-synthetic"
    make_synthetic(n_train=8192, n_test=2000).write(folder / "MNIST/raw")
    x, y = load_mnist(folder, train=True)
    tx, ty = load_mnist(folder, train=False)
    return x, y, tx, ty, f"synthetic ({len(y)} images)"


def init_hashes(train_x: Any) -> dict[str, str]:
    """Step-0 parameter bytes for each initializer family (uniform, normal, truncated normal, QR, LSUV)."""
    import torch
    import yaml
    from hydra.utils import instantiate

    from initstudy.nn.model import MLP

    hashes = {}
    for name in INITIALIZERS:
        torch.manual_seed(0)
        model = MLP([256, 128])
        initializer = instantiate(yaml.safe_load((REPO / f"conf/init/{name}.yaml").read_text()))
        initializer(model, batch=train_x[:512] if initializer.needs_data else None)
        hashes[name] = state_sha(model)
    return hashes


def denormals_flushed_on_every_thread() -> bool:
    """An elementwise product large enough to be split across the intra-op threads, whose exact result is
    subnormal: zero everywhere iff every thread flushes (FTZ is per-thread CPU state)."""
    import torch

    product = torch.full((1 << 20,), 1e-30) * 1e-10
    return bool((product == 0).all())


def exact_inputs(*shape: int, seed: int) -> Any:
    """Inputs built from integers by one exact division, so that no random-number kernel can differ."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-1000, 1001, shape, generator=generator).float() / 997.0


def tensor_sha(*tensors: Any) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def adam_probe(**options: Any) -> str:
    """Three Adam steps on fixed parameters and gradients (the study's hyper-parameters)."""
    import torch

    params = [exact_inputs(256, 784, seed=1).requires_grad_(), exact_inputs(256, seed=2).requires_grad_()]
    optimizer = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-7, **options)
    for step in range(3):
        for index, p in enumerate(params):
            p.grad = exact_inputs(*p.shape, seed=10 + step * 2 + index) * 1e-3
        optimizer.step()
    return tensor_sha(*params)


def op_probes() -> dict[str, str]:
    """Output bytes of each kind of operation the training and evaluation paths run, on exact inputs."""
    import torch
    import torch.nn.functional as F

    batch, weight = exact_inputs(64, 784, seed=3), exact_inputs(256, 784, seed=4) / 28
    big = exact_inputs(10_000, 784, seed=5)
    logits, labels = exact_inputs(64, 10, seed=6) * 3, torch.arange(64) % 10
    logits_big, labels_big = exact_inputs(10_000, 10, seed=7) * 3, torch.arange(10_000) % 10
    upstream = exact_inputs(64, 256, seed=8)
    x = logits.clone().requires_grad_()
    F.cross_entropy(x, labels).backward()
    values = exact_inputs(1 << 20, seed=9)
    probes = {
        "matmul 64x784 @ 784x256 (MKL sgemm)": lambda: F.linear(batch, weight),
        "matmul 10000x784 @ 784x256 (MKL sgemm)": lambda: F.linear(big, weight),
        "weight grad 256x64 @ 64x784 (MKL sgemm)": lambda: upstream.T @ batch,
        "bias grad: sum over batch of 64x256": lambda: upstream.sum(0),
        "log_softmax 64x10": lambda: F.log_softmax(logits, 1),
        "log_softmax 10000x10": lambda: F.log_softmax(logits_big, 1),
        "cross_entropy mean 64 + backward": lambda: torch.cat(
            [F.cross_entropy(logits, labels)[None], x.grad.flatten()]
        ),
        "cross_entropy sum 10000": lambda: F.cross_entropy(logits_big, labels_big, reduction="sum"),
        "sum of 2^20 floats": lambda: values.sum(),
        "mean/std of 2^20 floats": lambda: torch.stack([values.mean(), values.std()]),
        "relu": lambda: F.relu(values),
        "tanh": lambda: torch.tanh(values),
        "sigmoid": lambda: torch.sigmoid(values),
        "gelu": lambda: F.gelu(values),
        "exp": lambda: torch.exp(values),
    }
    out = {name: tensor_sha(fn()) for name, fn in probes.items()}
    out["Adam fused step x3"] = adam_probe(fused=True)
    out["Adam foreach step x3"] = adam_probe(foreach=True)
    out["Adam single-tensor step x3"] = adam_probe(foreach=False)
    init = torch.nn.init
    draws = {
        "uniform_ on [0, 1)": lambda t: init.uniform_(t),
        "uniform_ on [-0.07, 0.07) (Glorot's)": lambda t: init.uniform_(t, -0.07, 0.07),
        "normal_": lambda t: init.normal_(t),
        "trunc_normal_": lambda t: init.trunc_normal_(t),
        "orthogonal_ (QR)": lambda t: init.orthogonal_(t),
        "randperm 60000": lambda t: torch.randperm(60_000),
    }
    for name, draw in draws.items():
        torch.manual_seed(0)
        out[f"init draw {name}"] = tensor_sha(draw(torch.empty(256, 784)))
    return out


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from initstudy.nn.initializers import VarianceScaling
    from initstudy.nn.model import MLP

    torch.set_num_threads(args.threads)
    flushed = torch.set_flush_denormal(not args.no_flush) and not args.no_flush
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    x, y, tx, ty, data = load_data()
    inits = init_hashes(x)
    torch.manual_seed(0)
    model = MLP([256, 128])
    VarianceScaling("glorot_uniform", 1.0, "fan_avg", "uniform")(model)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7, fused=not args.foreach or None
    )
    generator = torch.Generator().manual_seed(0)
    order = torch.cat(
        [torch.randperm(len(y), generator=generator) for _ in range(1 + args.steps * 64 // len(y))]
    )
    started = time.perf_counter()
    for index in order[: args.steps * 64].split(64):
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds_per_step = (time.perf_counter() - started) / args.steps
    with torch.inference_mode():
        logits = model(tx)
        test_loss = float(F.cross_entropy(logits, ty, reduction="sum")) / len(ty)
        test_acc = float((logits.argmax(1) == ty).float().mean())
    print(json.dumps({
        "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "flush_denormal": flushed, "flushed_every_thread": denormals_flushed_on_every_thread(),
        "data": data, "ops": op_probes(), "init": inits, "trained": state_sha(model), "test_loss": test_loss.hex(),
        "test_acc": test_acc, "ms_per_step": seconds_per_step * 1000,
    }))  # fmt: skip


# ---- driver -------------------------------------------------------------------------------------------
def cpu_has_avx512() -> bool:
    """ATen's AVX-512 kernels need F, BW, VL and DQ; ATEN_CPU_CAPABILITY=avx512 without them is SIGILL."""
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return False
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags.split())


def run_worker(env: dict[str, str | None], threads: int, steps: int, *flags: str) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    environment.update({k: v for k, v in env.items() if v is not None})
    environment["PYTHONPATH"] = str(REPO / "src")
    command = [sys.executable, __file__, "--worker", "--threads", str(threads), "--steps", str(steps), *flags]
    out = subprocess.run(command, env=environment, capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"env": {k: v for k, v in env.items() if v is not None}, "flags": list(flags), **result}


def matrix(steps: int) -> list[dict[str, Any]]:
    capabilities = ["default", "avx2", *(["avx512"] if cpu_has_avx512() else [])]
    rows = []
    for capability, mkl, threads in itertools.product(capabilities, MKL_MODES, (1, 2)):
        row = run_worker({"ATEN_CPU_CAPABILITY": capability, "MKL_CBWR": mkl}, threads, steps)
        row.update(capability_set=capability, mkl=mkl or "unset")
        rows.append(row)
        print(f"{capability:8s} MKL_CBWR={mkl or 'unset':18s} threads={threads} -> {row['trained']} "
              f"({row['ms_per_step']:.2f} ms/step)", flush=True)  # fmt: skip
    return rows


def extra_checks(steps: int) -> dict[str, Any]:
    """oneDNN's ISA cap, oneDNN off, flush-denormal and the Adam implementation: on this model's path?"""
    base = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
    runs = {
        "base (avx2, COMPATIBLE, 2 threads)": run_worker(base, 2, steps),
        "ONEDNN_MAX_CPU_ISA=AVX2": run_worker({**base, "ONEDNN_MAX_CPU_ISA": "AVX2"}, 2, steps),
        "ONEDNN_MAX_CPU_ISA=SSE41": run_worker({**base, "ONEDNN_MAX_CPU_ISA": "SSE41"}, 2, steps),
        "torch.backends.mkldnn.enabled=False": run_worker(base, 2, steps, "--no-mkldnn"),
        "flush denormal off": run_worker(base, 2, steps, "--no-flush"),
        "Adam foreach instead of fused": run_worker(base, 2, steps, "--foreach"),
    }
    return {name: {"trained": row["trained"], "init": row["init"], "flushed_every_thread": row["flushed_every_thread"]}
            for name, row in runs.items()}  # fmt: skip


def value(row: dict[str, Any], key: str) -> str:
    section, _, name = key.partition(".")
    return row[section][name] if name else row[section]


def identical_groups(rows: list[dict[str, Any]], axis: str, key: str) -> tuple[int, int]:
    """Vary ``axis``, hold the other axes: (groups whose ``key`` bytes are the same for every value, groups)."""
    fixed = [a for a in AXES if a != axis]
    groups: dict[tuple, set[str]] = defaultdict(set)
    for row in rows:
        groups[tuple(row[f] for f in fixed)].add(value(row, key))
    return sum(len(values) == 1 for values in groups.values()), len(groups)


AXES = ("capability_set", "threads", "mkl")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per compared quantity: for each axis, in how many groups the bytes stay the same; and the threads axis
    per MKL mode and capability (the rows the profile's choice rests on)."""
    keys = ["trained", *(f"init.{n}" for n in INITIALIZERS), *(f"ops.{n}" for n in rows[0]["ops"])]
    table = {key: {axis: "{}/{}".format(*identical_groups(rows, axis, key)) for axis in AXES} for key in keys}
    threads = {}
    for capability, mkl in dict.fromkeys((row["capability_set"], row["mkl"]) for row in rows):
        subset = [row for row in rows if row["capability_set"] == capability and row["mkl"] == mkl]
        threads[f"{capability} / MKL_CBWR={mkl}"] = {
            key: len({value(row, key) for row in subset}) == 1 for key in keys
        }
    mkl_modes = {}
    for capability, threads_count in dict.fromkeys((row["capability_set"], row["threads"]) for row in rows):
        subset = {
            row["mkl"]: row["trained"]
            for row in rows
            if row["capability_set"] == capability and row["threads"] == threads_count
        }
        mkl_modes[f"{capability} / {threads_count} threads"] = subset
    return {"identical_groups": table, "threads_independent": threads, "trained_by_mkl_mode": mkl_modes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--foreach", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-flush", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-mkldnn", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per worker")
    parser.add_argument("--out", type=Path, default=REPO / "reports/numerics_matrix.json")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    started = time.perf_counter()
    rows = matrix(args.steps)
    result = {
        "steps": args.steps,
        "machine": {"cpu": cpu_model(), "avx512": cpu_has_avx512(), "python": platform.python_version()},
        "summary": summarise(rows),
        "extra_checks": extra_checks(args.steps),
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'identical across (groups)':48s}" + "".join(f"{axis:>16s}" for axis in AXES))
    for key, cells in result["summary"]["identical_groups"].items():
        print(f"{key[:48]:48s}" + "".join(f"{cells[axis]:>16s}" for axis in AXES))
    for name, flags in result["summary"]["threads_independent"].items():
        print(
            f"threads 1 vs 2, {name}: trained identical {flags['trained']}; "
            f"differs: {', '.join(k for k, same in flags.items() if not same) or 'nothing'}"
        )
    for name, check in result["extra_checks"].items():
        print(f"{name:40s} trained {check['trained']}")
    print(f"written to {args.out}")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), ""
    )


if __name__ == "__main__":
    main()
