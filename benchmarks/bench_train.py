"""``make bench``: what Lightning, Hydra and MLflow cost on top of the arithmetic, measured in one run.

Median seconds per epoch (after one warm-up epoch) of, in one process:
  (a) a plain PyTorch loop written here (device-resident tensors, index slicing, no logging);
  (b) the project's own training path exactly as ``python -m initstudy.train`` runs it (runner.train_run on
      the composed params.yaml, per-epoch test evaluation and MLflow logging on, to a throw-away store);
  (c) the floor: only the forward and backward matmuls of one epoch at this batch size.
Then b/a, b/c, peak memory, a breakdown of one run, a no-op ``dvc repro report`` and the download stage with files
present (both in a throw-away copy of the repo on synthetic data). Writes reports/benchmarks.json (not a DVC
metric: timings are noise-dependent). Absolute times swing on shared machines; compare ratios.

(a)-(c) run under params.yaml's numerics profile (portable by default), applied before torch is imported.
What the profile costs is measured apart, in fresh processes (the profile's kernels are chosen at start-up):
``python -m initstudy.train`` under numerics=portable, numerics=fast, and fast on one thread (the kernels'
share of the cost apart from the thread count's).

``--against ../main`` measures only (b), of another checkout and this one side by side in alternating fresh
processes: whether a change made training slower.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.chdir(REPO)

from initstudy.config.compose import compose_config  # noqa: E402
from initstudy.core import atomic  # noqa: E402
from initstudy.sweep import jobs  # noqa: E402

PROFILE = jobs.apply_for_sweep([], multirun=False)  # before torch: its kernels are chosen at import

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from initstudy.data.datamodule import load_mnist  # noqa: E402
from initstudy.data.fetch import verified_files  # noqa: E402
from initstudy.nn.initializers import VarianceScaling  # noqa: E402
from initstudy.nn.model import MLP  # noqa: E402

BATCH, LR, EPS = 64, 1e-3, 1e-7


def mnist_or_synthetic() -> tuple[torch.Tensor, torch.Tensor, str]:
    cfg = compose_config([])
    raw = REPO / cfg.data.root / "MNIST" / "raw"
    expected = {str(k): str(v) for k, v in cfg.download.sha256.items()}
    if len(verified_files(raw, expected)) == len(expected):
        x, y = load_mnist(REPO / cfg.data.root, train=True)
        return x, y, "MNIST (60,000 training images)"
    generator = torch.Generator().manual_seed(0)
    return (
        torch.rand(60_000, 784, generator=generator),
        torch.randint(0, 10, (60_000,), generator=generator),
        "synthetic",
    )


def plain_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, tuned: bool = False) -> list[float]:
    """(a) The reference: what a careful researcher writes by hand. ``tuned`` gives it the two numerics settings
    the project uses (fused Adam, subnormals flushed to zero), so that (b) vs tuned (a) isolates what
    Lightning, Hydra and MLflow cost."""
    torch.set_flush_denormal(tuned)  # process-global: set explicitly for every measurement
    torch.manual_seed(0)
    model = MLP([256, 128])
    VarianceScaling("glorot_uniform", 1.0, "fan_avg", "uniform")(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, eps=EPS, fused=True if tuned else None)
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for index in order.split(BATCH):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return times


def project_path(epochs: int, workdir: Path) -> dict:
    """(b) runner.train_run, as the CLI calls it, logging to a throw-away SQLite store."""
    from initstudy.runs import rundir
    from initstudy.tracking import store
    from initstudy.train.fit import train_run

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cfg = compose_config(
        ["init=glorot_uniform", f"trainer.max_epochs={epochs}", f"logger.tracking_uri={uri}"]
    )
    store.ensure_experiment(uri, cfg.logger.experiment_name, workdir)
    run_dir = workdir / "run"
    train_run(cfg, run_dir, rundir.staging_dir(run_dir), rundir.run_identity(cfg))
    return json.loads((run_dir / "timing.json").read_text())


def matmul_floor(repeats: int) -> list[float]:
    """(c) The forward and backward matmuls of one epoch at batch 64: 3 forward, 3 weight-gradient and 2
    input-gradient products per step, on preallocated tensors."""
    sizes = [784, 256, 128, 10]
    steps = -(-60_000 // BATCH)
    weights = [torch.randn(o, i) for i, o in itertools.pairwise(sizes)]
    acts = [torch.randn(BATCH, s) for s in sizes]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            for layer, weight in enumerate(weights):
                torch.mm(acts[layer], weight.T)  # forward
                torch.mm(acts[layer + 1].T, acts[layer])  # weight gradient
                if layer:
                    torch.mm(acts[layer + 1], weight)  # gradient w.r.t. the layer's input
        times.append(time.perf_counter() - started)
    return times


# What a throw-away study repo needs: the tracked configuration and code (src/ for DVC's dependency hashes).
STUDY_ITEMS = ("params.yaml", "dvc.yaml", "conf", "src/initstudy", "src/hydra_plugins", ".dvc/config", ".dvc/plots", ".dvcignore",
               ".gitignore")  # fmt: skip


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A command as a user runs it (offline DVC, this interpreter first on PATH); fails loudly."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}\n{result.stderr[-3000:]}")
    return result


def study_copy(folder: Path) -> Path:
    """A git repo holding this study's configuration and code, MNIST replaced by tiny synthetic files served
    from a local folder, and a one-run default sweep of one epoch."""
    import yaml

    from initstudy.data.synthetic import make_synthetic

    repo = folder / "study"
    for item in STUDY_ITEMS:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (repo / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / item)
    data = make_synthetic()
    local = data.write(folder / "local")
    download = yaml.safe_load((repo / "conf/download/default.yaml").read_text())
    download.update(sources=["local"], local_dir=str(local), sha256=data.sha256)
    (repo / "conf/download/default.yaml").write_text(yaml.safe_dump(download))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["trainer"]["max_epochs"] = 1
    params["data"]["val_size"] = 100  # of the 600 synthetic training images (params.yaml holds out 10,000)
    params["hydra"]["sweeper"]["params"] = {"init": "he_uniform", "seed": "0"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):  # fmt: skip
        run(command, repo)
    return repo


def pipeline_timings() -> dict:
    """No-op `dvc repro report` and the download stage with files present, in a throw-away repo on tiny data."""
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        repo = study_copy(Path(folder))
        dvc = str(Path(sys.executable).parent / "dvc")
        # The default study's stages only: the depth experiment (150 runs) is not what this measures.
        run([dvc, "repro", "report"], repo)
        started = time.perf_counter()
        noop = run([dvc, "repro", "report"], repo)
        noop_seconds = time.perf_counter() - started
        assert "Running stage" not in noop.stdout, noop.stdout
        started = time.perf_counter()
        run([sys.executable, "-m", "initstudy.data"], repo)
        download_seconds = time.perf_counter() - started
        started = time.perf_counter()
        run(
            [sys.executable, "-m", "initstudy.train", "trainer.max_epochs=1", "logger=offline", "init=zeros"],
            repo,
        )
        single_run_seconds = time.perf_counter() - started
        timing = json.loads((repo / "runs/zeros/seed_0/timing.json").read_text())
    return {"noop_repro_seconds": noop_seconds, "download_present_seconds": download_seconds,
            "tiny_run_startup_seconds": timing["process_start_to_training_seconds"],
            "tiny_run_command_seconds": single_run_seconds}  # fmt: skip


def single_run() -> dict:
    """One default run as a user starts it (`python -m initstudy.train`, 1 epoch, offline) in a fresh process:
    its start-up (process start to first training step) and peak resident memory, from its timing.json."""
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        command = [sys.executable, "-m", "initstudy.train", "trainer.max_epochs=1", "logger=offline",
                   f"hydra.run.dir={folder}"]  # fmt: skip
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        return json.loads((Path(folder) / "timing.json").read_text())


def profile_cost(epochs: int, rounds: int = 3) -> dict:
    """Seconds per epoch of ``python -m initstudy.train`` (offline, fresh process) under each profile, in
    this run; ``fast`` also on one thread, to split the kernels' cost from the thread count's. The variants
    alternate for ``rounds`` rounds and each keeps its fastest round, so that the machine's drift (2x within
    minutes on a shared VM) falls on all of them alike."""
    variants = {
        "portable": ["numerics=portable"],
        "fast": ["numerics=fast"],
        "fast_1_thread": ["numerics=fast", "numerics.num_threads=1"],
    }
    raw: dict[str, list[float]] = {name: [] for name in variants}
    threads = {}
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        for round_, (name, overrides) in itertools.product(range(rounds), variants.items()):
            run_dir = Path(folder) / f"{name}-{round_}"
            command = [sys.executable, "-m", "initstudy.train", f"trainer.max_epochs={epochs}", "logger=offline",
                       f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
            subprocess.run(command, cwd=REPO, check=True, capture_output=True)
            timing = json.loads((run_dir / "timing.json").read_text())
            raw[name].append(median_after_warmup(timing["epoch_seconds"]))
            threads[name] = timing["torch_threads"]
    seconds = {name: min(values) for name, values in raw.items()}
    return {
        "ratio_portable_vs_fast": seconds["portable"] / seconds["fast"],
        "ratio_portable_vs_fast_1_thread": seconds["portable"] / seconds["fast_1_thread"],
        "seconds_per_epoch": seconds,
        "torch_threads": threads,
        "raw_seconds_per_epoch": raw,
    }


def print_profile_cost(profiles: dict) -> None:
    cost, threads = profiles["seconds_per_epoch"], profiles["torch_threads"]
    print(f"numerics: portable {cost['portable']:.3f} s/epoch ({threads['portable']} thread), fast {cost['fast']:.3f} "
          f"({threads['fast']} threads), fast on 1 thread {cost['fast_1_thread']:.3f}: portable/fast "
          f"{profiles['ratio_portable_vs_fast']:.2f}, portable/fast-1-thread {profiles['ratio_portable_vs_fast_1_thread']:.2f}")  # fmt: skip


def numerics_only(epochs: int, out: Path) -> None:
    """Re-measure only what the profiles cost, into the ``numerics`` entry of an existing benchmarks.json."""
    result = json.loads(out.read_text()) if out.is_file() else {}
    profiles = profile_cost(epochs)
    result["numerics"] = profiles
    atomic.write_json(out, result)
    print_profile_cost(profiles)
    print(f"written to {out} (numerics only)")


# (b) in a fresh process of a given checkout, through the API both sides of a comparison share; prints timing.json.
PROJECT_RUN = """
import json, sys, tempfile
from pathlib import Path
from initstudy import numerics
from initstudy.config import compose_config
overrides = sys.argv[1:]
numerics.apply_before_torch(numerics.from_config(compose_config(overrides).numerics))
from initstudy import rundir, tracking
from initstudy.train.fit import train_run
with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
    uri = f"sqlite:///{folder}/mlflow.db"
    cfg = compose_config([*overrides, f"logger.tracking_uri={uri}"])
    tracking.ensure_experiment(uri, cfg.logger.experiment_name, Path(folder))
    run = Path(folder) / "run"
    train_run(cfg, run, rundir.staging_dir(run), "bench")
    print(json.dumps(json.loads((run / "timing.json").read_text())))
"""


def data_root_of(checkouts: list[Path]) -> Path | None:
    """The first checkout's MNIST folder that holds the real files (both sides must train on the same data)."""
    for checkout in checkouts:
        root = checkout / compose_config([]).data.root
        if (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return root
    return None


def against(other: Path, epochs: int, rounds: int, out: Path) -> None:
    """(b) of ``other`` (another checkout, e.g. main) and of this one, each in fresh processes with its own
    code and config, alternating for ``rounds`` rounds; each side keeps its fastest round, so that the
    machine's drift falls on both alike. Writes the ``against`` entry of ``out``."""
    checkouts = {"other": other.resolve(), "this": REPO}
    root = data_root_of(list(checkouts.values()))
    if root is None:
        raise SystemExit("--against needs real MNIST in one of the two checkouts")
    overrides = ["init=glorot_uniform", f"trainer.max_epochs={epochs}", f"data.root={root}"]
    raw: dict[str, list[float]] = {name: [] for name in checkouts}
    for _, (name, checkout) in itertools.product(range(rounds), checkouts.items()):
        env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "INITSTUDY_ROOT": str(checkout)}
        done = subprocess.run([sys.executable, "-c", PROJECT_RUN, *overrides], cwd=checkout, env=env,
                              check=True, capture_output=True, text=True)  # fmt: skip
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        raw[name].append(median_after_warmup(timing["epoch_seconds"]))
        print(f"{name}: {raw[name][-1]:.3f} s/epoch", flush=True)
    seconds = {name: min(values) for name, values in raw.items()}
    result = json.loads(out.read_text()) if out.is_file() else {}
    result["against"] = {"other": str(checkouts["other"]), "ratio_this_vs_other": seconds["this"] / seconds["other"],
                         "seconds_per_epoch": seconds, "raw_seconds_per_epoch": raw, "data": str(root)}  # fmt: skip
    atomic.write_json(out, result)
    print(
        f"this / other = {seconds['this'] / seconds['other']:.3f} (fastest of {rounds} rounds each); written to {out}"
    )


def median_after_warmup(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement (the first is warm-up)")
    parser.add_argument("--out", type=Path, default=REPO / "reports/benchmarks.json")
    parser.add_argument("--numerics-only", action="store_true", help="only what the numerics profiles cost")
    parser.add_argument("--against", type=Path, help="only (b), of another checkout (e.g. main) and this one")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of --against")
    args = parser.parse_args()
    if args.numerics_only:
        numerics_only(args.epochs, args.out)
        return
    if args.against:
        against(args.against, args.epochs, args.rounds, args.out)
        return
    threads = torch.get_num_threads()
    x, y, data_name = mnist_or_synthetic()
    print(
        f"data: {data_name}; torch {torch.__version__}, {threads} threads, {platform.processor() or platform.machine()}"
    )

    plain = plain_loop(x, y, args.epochs)
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        project = project_path(args.epochs, Path(folder))
    plain_again = plain_loop(x, y, args.epochs)  # bracket (b) to see drift of the machine
    plain_tuned = plain_loop(x, y, args.epochs, tuned=True)  # (b)'s numerics settings: framework cost only
    floor = matmul_floor(args.epochs)
    single = single_run()
    profiles = profile_cost(args.epochs)
    torch.set_num_threads(threads)

    a = statistics.median(plain[1:] + plain_again[1:])
    a_tuned = median_after_warmup(plain_tuned)
    b = median_after_warmup(project["epoch_seconds"])
    c = median_after_warmup(floor)
    epochs_run = len(project["epoch_seconds"])
    breakdown = {
        "setup_seconds (data load, model, logger)": project["setup_seconds"],
        "training_seconds": sum(project["epoch_seconds"])
        - project["eval_seconds"]
        - project["logging_seconds"],
        "evaluation_seconds": project["eval_seconds"],
        "mlflow_logging_seconds": project["logging_seconds"],
        "epochs": epochs_run,
    }
    pipeline = pipeline_timings()
    result = {
        "ratio_train_vs_plain": b / a,
        "ratio_train_vs_floor": b / c,
        "ratio_plain_vs_floor": a / c,
        "ratio_train_vs_plain_tuned": b / a_tuned,
        "plain_tuned_seconds_per_epoch": a_tuned,
        "seconds_per_epoch": b,
        "plain_seconds_per_epoch": a,
        "floor_seconds_per_epoch": c,
        "peak_rss_mib": single["peak_rss_mib"],
        "startup_seconds": single["process_start_to_training_seconds"],
        "noop_repro_seconds": pipeline["noop_repro_seconds"],
        "download_present_seconds": pipeline["download_present_seconds"],
        "breakdown": breakdown,
        "numerics": profiles,
        "data": data_name,
        "batch_size": BATCH,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": threads,
            "numerics_profile": PROFILE.name,  # of (a)-(c); `numerics` compares the profiles
            "device": project["device"],
            "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "raw": {
            "plain": plain + plain_again,
            "plain_tuned": plain_tuned,
            "project": project["epoch_seconds"],
            "floor": floor,
        },
    }
    # bench_stacked.py's section (``make bench`` runs it second) is its own: kept when this part re-runs alone.
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    atomic.write_json(args.out, {**result, **{k: v for k, v in previous.items() if k == "stacked"}})
    rows = [
        ("(a) plain PyTorch loop", a, a / c),
        ("(a') plain loop, tuned", a_tuned, a_tuned / c),
        ("(b) initstudy train path", b, b / c),
        ("(c) matmul floor", c, 1.0),
    ]
    print(f"\n{'':28s}{'s/epoch':>10s}{'x floor':>10s}")
    for name, seconds, ratio in rows:
        print(f"{name:28s}{seconds:10.3f}{ratio:10.2f}")
    print(
        f"\nb/a = {b / a:.3f}   b/a' = {b / a_tuned:.3f}   b/c = {b / c:.2f}   "
        f"peak RSS of one run {single['peak_rss_mib']:.0f} MiB"
    )
    print("breakdown of one run: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items() if k != "epochs"))
    print(f"start-up to first step {single['process_start_to_training_seconds']:.2f} s; no-op dvc repro {pipeline['noop_repro_seconds']:.2f} s; "
          f"download stage with files present {pipeline['download_present_seconds']:.2f} s")  # fmt: skip
    print_profile_cost(profiles)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
