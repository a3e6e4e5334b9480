"""``make bench`` (second part): a sweep through the stacked launcher against the basic one, per-step costs
against the matmul floor, and start-up against the bare imports; all ratios measured in this one run.

(a) A reduced default study (params.yaml's sweep: 4 initializers x 5 seeds = 20 runs; ``--epochs`` epochs
    (1 by default; the study trains 10) on ``--train-size`` images, by default 50,000: the study's epoch,
    evaluations every 100 steps included) through ``python -m initstudy.train --multirun`` with ``hydra/launcher=basic`` (one job after
    another in one process), ``hydra/launcher=joblib`` (one job per CPU), the stacked launcher as it was
    before shards (``stacked_processes``: one worker process per CPU, each training one group on one thread)
    and ``hydra/launcher=stacked`` as the DVC stages run it (one process, each group's members in one shard
    per CPU, each shard on a thread), in a throw-away copy of the study on real MNIST: wall time, and peak
    resident memory of the whole process tree (sampled) and of its largest process.
(b) Per optimizer step, training only (fit minus evaluations, from each run's timing.json): a single run's
    step, and a stacked group's step divided by its members, each against the floor: only the forward and
    backward matmuls of one 784-256-128-10 model at batch 64 (``torch.addmm``/``torch.mm``), on one thread,
    in a fresh process under the runs' numerics profile (``portable``: MKL's SSE2 branch, the same kernels
    the runs use, so "the floor of the same work"), and for reference under ``fast`` (the CPU's own AVX2 or
    AVX-512 kernels: what the runs would get if they gave up identical bytes across machines), and with one
    floor process per core at once (the stacked sweep trains one group per core: they share caches and memory
    bandwidth, which a floor measured alone on an idle machine does not pay).
    The stacked sweep's wall time is also split into training, evaluations and the rest, and bounded: with
    every member's step at the floor and all else as measured, how much faster than the basic sweep could it
    be? (``ratio_sweep_basic_vs_stacked_step_at_floor``: what a faster step alone can reach.)
(c) Start-up: ``python -c "import torch, pytorch_lightning"`` against a run's time from process start to its
    first training step (timing.json), wall and CPU seconds, in fresh processes, alternating, fastest of
    ``--rounds`` each (``--startup-only``: only this); beside them the imports plus MLflow's package and
    store (the least an online run can take) and the run with ``logger=offline`` (the project's own share).

Writes the ``stacked`` entry of reports/benchmarks.json (keeps the others). Absolute times swing on shared
machines; compare the ratios, and read ``machine.shared``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("params.yaml", "dvc.yaml", "conf")
BATCH, SIZES = 64, (784, 256, 128, 10)

from initstudy.core import atomic  # noqa: E402  (light: no torch)


def mnist_folder(candidates: list[Path]) -> Path:
    """The first ``<root>/MNIST/raw`` that holds the real files (this checkout's, or ``--mnist``)."""
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte").is_file():
            return folder
    raise SystemExit(
        f"no MNIST files in {', '.join(map(str, candidates))}: run `dvc repro download` or pass --mnist"
    )


def study_copy(folder: Path, mnist: Path) -> Path:
    """The study's configuration in ``folder``, its data folder a link to real MNIST: runs, MLflow store and
    lock land there, never in this checkout. The code is this checkout's (PYTHONPATH / the editable install)."""
    repo = folder / "study"
    repo.mkdir()
    for item in COPIED:
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy2)(REPO / item, repo / item)
    (repo / "data/raw/MNIST").mkdir(parents=True)
    (repo / "data/raw/MNIST/raw").symlink_to(mnist.resolve())
    return repo


def environment(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(INITSTUDY_ROOT=str(repo), MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


class TreeMemory:
    """Peak memory of a process and its descendants, sampled every 50 ms: the sum of their proportional set
    sizes (PSS: each shared page divided among the processes that map it, so the sum is what the machine holds
    at once; sampled every 0.5 s), the sum of their resident sizes (RSS: shared pages counted once per process, e.g. torch's
    libraries in every worker, and a child forked for a subprocess counted twice until it execs), and the
    largest single process's RSS."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.total = self.largest = self.proportional = self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        import psutil

        while not self.done.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                # PSS walks every page table (/proc/<pid>/smaps_rollup): every 10th sample, not to load the
                # cores the sweep uses.
                sizes, shares, proportional = [], [], self.samples % 10 == 0
                self.samples += 1
                for process in processes:
                    with contextlib.suppress(psutil.Error):
                        if proportional:
                            full = process.memory_full_info()
                            sizes.append(full.rss)
                            shares.append(full.pss)
                        else:
                            sizes.append(process.memory_info().rss)
                self.total, self.largest = (
                    max(self.total, sum(sizes)),
                    max(self.largest, max(sizes, default=0)),
                )
                self.proportional = max(self.proportional, sum(shares))
            except psutil.Error:
                pass
            self.done.wait(0.05)

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.thread.join()
        return {
            "peak_pss_tree_mib": self.proportional / 2**20,
            "peak_rss_tree_mib": self.total / 2**20,
            "peak_rss_largest_process_mib": self.largest / 2**20,
        }


def sweep(repo: Path, launcher: list[str], train_size: int, epochs: int) -> dict:
    """The default sweep, ``epochs`` epochs on ``train_size`` images, through ``launcher``: :func:`study_sweep`."""
    return study_sweep(repo, [*launcher, f"trainer.max_epochs={epochs}", f"data.train_size={train_size}"])


def study_sweep(repo: Path, overrides: list[str]) -> dict:
    """The default sweep (params.yaml's 20 runs) with ``overrides``: wall time, memory, each run's timing.json,
    and the most optimizer steps a run took (metrics.json's ``steps_completed``: what the runs really did,
    whatever the data and epochs). The runs and the MLflow store are removed first."""
    measured = timed_sweep(repo, "runs", overrides)
    folders = sorted(path.parent for path in (repo / "runs").glob("*/seed_*/timing.json"))
    assert len(folders) == 20, len(folders)
    steps = max(json.loads((folder / "metrics.json").read_text())["steps_completed"] for folder in folders)
    return {**measured, "timings": [json.loads((folder / "timing.json").read_text()) for folder in folders],
            "steps": steps}  # fmt: skip


def timed_sweep(repo: Path, runs: str, overrides: list[str]) -> dict:
    """``python -m initstudy.train --multirun <overrides>`` in the throw-away copy: wall time and peak memory.
    Its runs folder, MLflow store and artifacts (the copy's, written by the previous sweep) are removed first."""
    for leftover in (runs, "mlartifacts"):
        shutil.rmtree(repo / leftover, ignore_errors=True)
    (repo / "mlflow.db").unlink(missing_ok=True)
    command = [sys.executable, "-m", "initstudy.train", "--multirun", *overrides]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=repo, env=environment(repo), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    memory = TreeMemory(process.pid)
    output, _ = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}\n{output[-3000:]}")
    return {"wall_seconds": wall, **memory.stop()}


# A reduced depth experiment (conf/experiment/depth.yaml): ReLU, depths 2, 10 and 30, its seven initializers,
# one seed, its one epoch of 10,000 images: 21 runs, 3 stacked groups of 7.
DEPTH_SWEEP = [
    "experiment=depth",
    "model.activation=relu",
    "model.depth=2,10,30",
    "seed=0",
    "trainer.max_epochs=1",
]


def depth_sweep(repo: Path, launcher: list[str]) -> dict:
    """The reduced depth experiment through ``launcher``: wall time and peak memory (runs_depth/ removed first)."""
    measured = timed_sweep(repo, "runs_depth", [*launcher, *DEPTH_SWEEP])
    runs = len(list((repo / "runs_depth").glob("*/*/*/seed_*/metrics.json")))
    assert runs == 21, runs
    return {**measured, "runs": runs}


def depth_only(args: argparse.Namespace, mnist: Path) -> None:
    """The reduced depth experiment through the basic and the stacked launcher, alternating nothing (one run
    each), into ``stacked.depth_sweep`` of an existing benchmarks.json."""
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        repo = study_copy(Path(folder), mnist)
        sweeps = {name: depth_sweep(repo, [f"hydra/launcher={name}"]) for name in ("basic", "stacked")}
    result = {"ratio_basic_vs_stacked": sweeps["basic"]["wall_seconds"] / sweeps["stacked"]["wall_seconds"],
              "sweep": sweeps, "overrides": DEPTH_SWEEP}  # fmt: skip
    print(f"depth sweep of {sweeps['stacked']['runs']} runs: basic {sweeps['basic']['wall_seconds']:.1f} s, stacked "
          f"{sweeps['stacked']['wall_seconds']:.1f} s: {result['ratio_basic_vs_stacked']:.2f}x")  # fmt: skip
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report.setdefault("stacked", {})["depth_sweep"] = result
    atomic.write_json(args.out, report)


def study_only(args: argparse.Namespace, mnist: Path) -> None:
    """The issue's measure of the sweep: the default study exactly as ``dvc repro train`` trains it (params.yaml:
    20 runs x 10 epochs of 50,000 images), through the basic launcher and through the stacked one (the stage's
    command), one run each, with the floor measured in between; into ``stacked.study_sweep`` of an existing
    benchmarks.json. ~20 min on a 2-core machine.

    With ``--numerics fast`` both sweeps run under that profile instead (torch on every core, the CPU's own
    kernels: not how the committed results are made) into ``stacked.study_sweep_fast``: whether stacking's
    gain over the basic launcher depends on the portable kernels. The floor is one thread's while those jobs
    run torch on every core, so it is not measured there, nor the bound drawn from it; the training /
    evaluation split stays."""
    profile = args.numerics
    overrides = [] if profile == "portable" else [f"numerics={profile}"]
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        repo = study_copy(Path(folder), mnist)
        sweeps = {
            name: study_sweep(repo, [f"hydra/launcher={name}", *overrides]) for name in ("basic", "stacked")
        }
        floor = matmul_floor("portable", repo) if profile == "portable" else None
    epochs, steps = len(sweeps["stacked"]["timings"][0]["epoch_seconds"]), sweeps["stacked"]["steps"]
    bound = sweep_at_floor(sweeps["stacked"], steps, floor)
    wall = {name: sweep["wall_seconds"] for name, sweep in sweeps.items()}
    result = {
        "ratio_basic_vs_stacked": wall["basic"] / wall["stacked"],
        "stacked_sweep_time": bound,
        "step_seconds": {
            name: statistics.median(train_step_seconds(t, steps) for t in sweeps[name]["timings"])
            for name in sweeps
        },
        "sweep": {name: {k: v for k, v in sweep.items() if k != "timings"} for name, sweep in sweeps.items()},
        "setup": {
            "runs": 20,
            "epochs": epochs,
            "steps_per_run": steps,
            "overrides": " ".join(overrides) or "none (params.yaml)",
            "torch_threads": sweeps["stacked"]["timings"][0]["torch_threads"],
        },
    }
    at_floor = None
    if floor is not None:
        at_floor = wall["basic"] / bound["wall_seconds"]
        result.update(ratio_basic_vs_stacked_step_at_floor=at_floor, matmul_floor=floor)
    print(f"default study (20 runs x {epochs} epochs, numerics={profile}): basic {wall['basic']:.1f} s, stacked {wall['stacked']:.1f} s: "
          f"{result['ratio_basic_vs_stacked']:.2f}x; stacked training {bound['training_seconds']:.1f} s, evaluations "
          f"{bound['evaluation_seconds']:.1f} s, the rest {bound['other_seconds']:.1f} s"
          + (f"; with the step at the floor: {at_floor:.2f}x" if at_floor else "")
          + f"; peak PSS basic {sweeps['basic']['peak_pss_tree_mib']:.0f} MiB, stacked {sweeps['stacked']['peak_pss_tree_mib']:.0f} MiB")  # fmt: skip
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    key = "study_sweep" if profile == "portable" else f"study_sweep_{profile}"
    report.setdefault("stacked", {})[key] = result
    atomic.write_json(args.out, report)


def train_step_seconds(timing: dict, steps: int) -> float:
    """Core-seconds per optimizer step and model, training only: the fit without its evaluations, per model,
    times the threads that trained at once (a stacked group's timing.json holds the group's wall times,
    shared by ``stacked_members`` models on ``stacked_shards`` threads): the same measure as the one-thread
    floor's, so the ratio compares work, not core counts."""
    wall = (timing["fit_seconds"] - timing["eval_seconds"]) / steps / timing.get("stacked_members", 1)
    return wall * timing.get("stacked_shards", 1)


def matmul_floor(profile: str, repo: Path, concurrent: int = 1) -> float:
    """The floor (below) in a fresh process whose environment is the numerics profile ``profile`` (its
    import-time variables must be set before torch loads MKL, hence the process), fastest of two rounds. With
    ``concurrent`` > 1, that many such processes at once (the mean of their floors): the floor under the load
    that the stacked launcher's ``concurrent`` workers put on the cores' shared caches and memory bandwidth."""
    command = [sys.executable, str(Path(__file__).resolve()), "--floor", profile]
    rounds = []
    for _ in range(2):
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment(repo))
                     for _ in range(concurrent)]  # fmt: skip
        rounds.append(statistics.mean(float(process.communicate()[0]) for process in processes))
    return min(rounds)


def floor_here(profile: str, steps: int = 2000) -> float:
    """Seconds per step of only the forward and backward matmuls of one 784-256-128-10 model at batch 64:
    per layer the forward ``addmm`` and the weight-gradient ``mm``, and the input-gradient ``mm`` of the
    layers after the first (8 products), on preallocated tensors, one torch thread, under ``profile``."""
    from initstudy.config import numerics

    settings = numerics.load(profile, REPO)
    numerics.apply_before_torch(settings)
    import torch

    numerics.apply_in_process(settings)
    torch.set_num_threads(1)
    weights = [torch.randn(o, i) for i, o in itertools.pairwise(SIZES)]
    biases = [torch.randn(o) for o in SIZES[1:]]
    acts = [torch.randn(BATCH, s) for s in SIZES]
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(steps // 5):
            for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
                torch.addmm(bias, acts[layer], weight.T)  # forward
                torch.mm(acts[layer + 1].T, acts[layer])  # weight gradient
                if layer:
                    torch.mm(acts[layer + 1], weight)  # gradient w.r.t. the layer's input
        best = min(best, (time.perf_counter() - started) / (steps // 5))
    return best


def sweep_at_floor(measured: dict, steps: int, floor: float | None) -> dict:
    """Where the stacked sweep's wall time went, and what it would be with every member's training step at the
    floor, all else as measured. Its groups train one after another (``n_jobs=1``), each group's members
    spread over its shards' threads; a group's timing.json (the same in each member's folder) holds its fit,
    and the evaluation passes inside it. With the step at the floor a group would train for
    ``floor x steps x members / shards``; the evaluations (the single run's kernels, the same work in either
    launcher), start-up, data and recording stay. The basic sweep's wall time over that bound is the most the
    ratio can reach by a faster step alone. ``floor=None``: only where the time went (no comparable floor)."""
    groups = {(t["fit_seconds"], t["eval_seconds"], t.get("stacked_members", 1), t.get("stacked_shards", 1))
              for t in measured["timings"]}  # fmt: skip
    training = sum(fit - evaluation for fit, evaluation, _, _ in groups)
    evaluation = sum(evaluation for _, evaluation, _, _ in groups)
    wall = measured["wall_seconds"]
    split = {
        "groups": len(groups),
        "training_seconds": training,
        "evaluation_seconds": evaluation,
        "other_seconds": wall - training - evaluation,
    }
    if floor is None:
        return split
    at_floor = sum(floor * steps * members / shards for _, _, members, shards in groups)
    return {
        **split,
        "training_at_floor_seconds": at_floor,
        "wall_seconds": wall - training + at_floor,
    }


STARTUP_IMPORTS = "import torch, pytorch_lightning"
# The bare imports, then this process's wall seconds since it was created and its CPU seconds (user + system):
# the measures timing.json's process_start_to_training_seconds and process_cpu_to_training_seconds use, taken
# inside the process (timed from outside, a process's wall time also holds its exit: ~1 s for torch's).
SINCE_START = (
    "; import os, time, psutil; print(time.time() - psutil.Process().create_time(), sum(os.times()[:2]))"
)
IMPORTS = STARTUP_IMPORTS + SINCE_START
# The same, plus what an online run needs of MLflow before its first step: the package and a client of the
# run's store that has read it (SQLAlchemy engine, schema check). No run can start training sooner with
# MLflow on; the difference is MLflow's share of the start-up. Measured after each round's runs, which made
# the store (a new store would add its creation).
IMPORTS_WITH_MLFLOW = (
    STARTUP_IMPORTS
    + ", mlflow, sys; mlflow.MlflowClient(tracking_uri=sys.argv[1]).search_experiments()"
    + SINCE_START
)


def startup(repo: Path, rounds: int) -> dict:
    """Fastest of ``rounds`` fresh processes each, alternating: the bare imports; the imports plus MLflow's
    (package and store); one run from process start to its first training step (1 epoch on 640 images) with
    MLflow logging on, as a user starts it; and the same run with ``logger=offline`` (no MLflow in the
    process: the start-up of the project's own code). Wall seconds since the process was created and its CPU
    seconds, both read inside it: on a shared machine the wall time follows the other load, the CPU time much
    less, so the CPU ratio is the one to read there."""
    kinds = ("imports", "imports_with_mlflow", "to_training", "to_training_offline")
    wall: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    store = f"sqlite:///{repo / 'mlflow.db'}"
    for round_ in range(rounds):
        for kind, logger in (("to_training", "mlflow"), ("to_training_offline", "offline")):
            run_dir = repo / "runs" / f"startup-{logger}-{round_}"
            command = [sys.executable, "-m", "initstudy.train", "trainer.max_epochs=1", "data.train_size=640",
                       f"logger={logger}", f"hydra.run.dir={run_dir}"]  # fmt: skip
            subprocess.run(command, cwd=repo, env=environment(repo), check=True, capture_output=True)
            timing = json.loads((run_dir / "timing.json").read_text())
            wall[kind].append(timing["process_start_to_training_seconds"])
            cpu[kind].append(timing["process_cpu_to_training_seconds"])
        for kind, code in (("imports", [IMPORTS]), ("imports_with_mlflow", [IMPORTS_WITH_MLFLOW, store])):
            done = subprocess.run([sys.executable, "-c", *code], check=True, env=environment(repo),
                                  capture_output=True, text=True)  # fmt: skip
            since_start, used = map(float, done.stdout.split()[-2:])
            wall[kind].append(since_start)
            cpu[kind].append(used)
    best = {measure: {kind: min(values) for kind, values in series.items()} for measure, series in
            (("wall", wall), ("cpu", cpu))}  # fmt: skip
    ratios = {
        f"ratio_{name}_vs_imports_{measure}": best[measure][kind] / best[measure]["imports"]
        for name, kind in (
            ("start_to_training", "to_training"),
            ("start_to_training_offline", "to_training_offline"),
            ("imports_with_mlflow", "imports_with_mlflow"),
        )
        for measure in ("cpu", "wall")
    }
    return {
        **ratios,
        "seconds": best,
        "imports": STARTUP_IMPORTS,
        "logger": "mlflow (the default), to a SQLite store in the throw-away copy; and logger=offline",
        "raw": {"wall": wall, "cpu": cpu},
    }


def print_startup(start: dict) -> None:
    wall, cpu = start["seconds"]["wall"], start["seconds"]["cpu"]
    print(f"start-up: imports {wall['imports']:.2f} s wall / {cpu['imports']:.2f} s CPU; with MLflow's package "
          f"and store {wall['imports_with_mlflow']:.2f} s / {cpu['imports_with_mlflow']:.2f} s "
          f"({start['ratio_imports_with_mlflow_vs_imports_cpu']:.2f}x CPU); process start to training "
          f"{wall['to_training']:.2f} s / {cpu['to_training']:.2f} s: "
          f"{start['ratio_start_to_training_vs_imports_wall']:.2f}x wall, "
          f"{start['ratio_start_to_training_vs_imports_cpu']:.2f}x CPU; offline {wall['to_training_offline']:.2f} s "
          f"/ {cpu['to_training_offline']:.2f} s: {start['ratio_start_to_training_offline_vs_imports_wall']:.2f}x "
          f"wall, {start['ratio_start_to_training_offline_vs_imports_cpu']:.2f}x CPU", flush=True)  # fmt: skip


def startup_only(args: argparse.Namespace, mnist: Path) -> None:
    """Re-measure only the start-up, into ``stacked.startup`` of an existing benchmarks.json."""
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        start = startup(study_copy(Path(folder), mnist), args.rounds)
    print_startup(start)
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    section = report.setdefault("stacked", {})
    section["startup"] = start
    section.update({key: value for key, value in start.items() if key.startswith("ratio_")})
    atomic.write_json(args.out, report)


def shown_path(folder: Path) -> str:
    """A data folder as the record shows it: relative to the repository, never a path of the host."""
    return str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else folder.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=50000, help="training images per run (1 epoch)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs per run (the study: 10; fixed costs per sweep and per run weigh less with more)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per start-up measurement")
    parser.add_argument("--mnist", type=Path, help="a folder holding MNIST's four IDX files")
    parser.add_argument("--out", type=Path, default=REPO / "reports/benchmarks.json")
    parser.add_argument("--startup-only", action="store_true", help="only (c), into an existing report")
    parser.add_argument(
        "--depth-only",
        action="store_true",
        help="only the reduced depth experiment, basic vs stacked, into an existing report",
    )
    parser.add_argument(
        "--study-only",
        action="store_true",
        help="only the default study as `dvc repro train` trains it (10 epochs), basic vs stacked, into an existing report",
    )
    parser.add_argument(
        "--numerics",
        choices=("portable", "fast"),
        default="portable",
        help="with --study-only: the numerics profile both sweeps run under (the study's: portable)",
    )
    parser.add_argument("--shared", default="", help="note in the JSON what else ran on the machine")
    parser.add_argument("--floor", metavar="PROFILE", help=argparse.SUPPRESS)  # internal: one floor, printed
    args = parser.parse_args()
    if args.floor:
        print(floor_here(args.floor))
        return
    if args.numerics != "portable" and not args.study_only:
        parser.error(
            f"--numerics {args.numerics} applies only with --study-only (the other benchmarks set their own profiles)"
        )
    mnist = mnist_folder([p for p in (args.mnist, REPO / "data/raw/MNIST/raw") if p is not None])
    if args.startup_only:
        startup_only(args, mnist)
        return
    if args.depth_only:
        depth_only(args, mnist)
        return
    if args.study_only:
        study_only(args, mnist)
        return
    launchers = {
        "basic": ["hydra/launcher=basic"],
        "joblib": ["hydra/launcher=joblib"],
        "stacked_processes": [
            "hydra/launcher=stacked",
            "hydra.launcher.n_jobs=-1",
            "hydra.launcher.threads=1",
        ],
        "stacked": ["hydra/launcher=stacked"],
    }
    with tempfile.TemporaryDirectory(prefix="initstudy-bench-") as folder:
        repo = study_copy(Path(folder), mnist)
        start = startup(repo, args.rounds)
        print_startup(start)
        floors: dict[str, list[float]] = {"portable": [], "fast": [], "portable_concurrent": []}
        sweeps = {}
        for name, launcher in launchers.items():
            sweeps[name] = sweep(repo, launcher, args.train_size, args.epochs)
            workers = os.cpu_count() or 1
            for name_, values in floors.items():
                profile, concurrent = name_.split("_")[0], workers if name_.endswith("concurrent") else 1
                values.append(matmul_floor(profile, repo, concurrent))
            print(f"{name}: {sweeps[name]['wall_seconds']:.1f} s, peak PSS (tree) "
                  f"{sweeps[name]['peak_pss_tree_mib']:.0f} MiB, RSS summed {sweeps[name]['peak_rss_tree_mib']:.0f}, "
                  f"largest process {sweeps[name]['peak_rss_largest_process_mib']:.0f}", flush=True)  # fmt: skip
        threads = sweeps["basic"]["timings"][0]["torch_threads"]
    floor, fast_floor = min(floors["portable"]), min(floors["fast"])
    steps = sweeps["basic"]["steps"]  # every run's optimizer steps (the sweep has no divergence to stop one)
    loaded_floor = min(floors["portable_concurrent"])
    single = statistics.median(train_step_seconds(t, steps) for t in sweeps["basic"]["timings"])
    stacked = statistics.median(train_step_seconds(t, steps) for t in sweeps["stacked"]["timings"])
    in_processes = statistics.median(
        train_step_seconds(t, steps) for t in sweeps["stacked_processes"]["timings"]
    )
    bound = sweep_at_floor(sweeps["stacked"], steps, floor)
    members = sorted({t.get("stacked_members", 1) for t in sweeps["stacked"]["timings"]})
    shards = sorted({t.get("stacked_shards", 1) for t in sweeps["stacked"]["timings"]})
    wall = {name: s["wall_seconds"] for name, s in sweeps.items()}
    result = {
        "ratio_sweep_basic_vs_stacked": wall["basic"] / wall["stacked"],
        "ratio_sweep_joblib_vs_stacked": wall["joblib"] / wall["stacked"],
        "ratio_sweep_stacked_processes_vs_stacked": wall["stacked_processes"] / wall["stacked"],
        "ratio_peak_pss_stacked_processes_vs_stacked": sweeps["stacked_processes"]["peak_pss_tree_mib"]
        / sweeps["stacked"]["peak_pss_tree_mib"],
        "ratio_single_step_vs_floor": single / floor,
        "ratio_stacked_step_per_model_vs_floor": stacked / floor,
        "ratio_stacked_processes_step_per_model_vs_floor": in_processes / floor,
        "ratio_stacked_step_per_model_vs_fast_floor": stacked / fast_floor,
        # The stacked sweep trains one group per core at once; this floor runs one process per core at once.
        "ratio_stacked_step_per_model_vs_concurrent_floor": stacked / loaded_floor,
        **{key: value for key, value in start.items() if key.startswith("ratio_")},
        "ratio_sweep_basic_vs_stacked_step_at_floor": wall["basic"] / bound["wall_seconds"],
        "stacked_sweep_time": bound,
        "sweep": {name: {k: v for k, v in s.items() if k != "timings"} for name, s in sweeps.items()},
        "step_seconds": {
            "single_run": single,
            "stacked_per_model": stacked,
            "stacked_processes_per_model": in_processes,
            "measure": "core-seconds per optimizer step and model (wall x threads at once / members)",
            "matmul_floor": floor,
            "matmul_floor_profile": "portable (the runs' own)",
            "matmul_floor_fast": fast_floor,
            "matmul_floor_concurrent": loaded_floor,
            "matmul_floor_raw": floors,
        },
        "stacked_members": members,
        "stacked_shards": shards,
        "startup": start,
        "setup": {
            "runs": 20,
            "epochs": args.epochs,
            "train_size": args.train_size,
            "steps_per_run": steps,
            "batch_size": BATCH,
            "torch_threads": threads,
            "mnist": shown_path(mnist),
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "shared": args.shared or None,
        },
    }
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report["stacked"] = result
    atomic.write_json(args.out, report)
    print(f"\nsweep of 20 runs: basic {wall['basic']:.1f} s, joblib {wall['joblib']:.1f} s, stacked in worker "
          f"processes {wall['stacked_processes']:.1f} s, stacked {wall['stacked']:.1f} s ({members} members per "
          f"group, {shards} shards): {result['ratio_sweep_basic_vs_stacked']:.2f}x basic, "
          f"{result['ratio_sweep_joblib_vs_stacked']:.2f}x joblib, "
          f"{result['ratio_sweep_stacked_processes_vs_stacked']:.2f}x worker processes; peak PSS of the tree "
          f"{sweeps['stacked']['peak_pss_tree_mib']:.0f} MiB vs {sweeps['stacked_processes']['peak_pss_tree_mib']:.0f}")  # fmt: skip
    print(f"per step: single run {single * 1e3:.2f} ms = {single / floor:.2f}x the floor; stacked per model "
          f"{stacked * 1e3:.2f} ms = {stacked / floor:.2f}x (in worker processes {in_processes * 1e3:.2f} ms = "
          f"{in_processes / floor:.2f}x); floor {floor * 1e3:.3f} ms (portable, 1 thread), "
          f"{fast_floor * 1e3:.3f} ms (fast kernels: stacked {stacked / fast_floor:.1f}x), "
          f"{loaded_floor * 1e3:.3f} ms (portable, one per core at once: stacked {stacked / loaded_floor:.2f}x)")  # fmt: skip
    print(f"stacked sweep: training {bound['training_seconds']:.1f} s, evaluations {bound['evaluation_seconds']:.1f} s, "
          f"the rest {bound['other_seconds']:.1f} s; with the step at the floor {bound['wall_seconds']:.1f} s: at most "
          f"{result['ratio_sweep_basic_vs_stacked_step_at_floor']:.2f}x basic by a faster step")  # fmt: skip
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
