"""The stacked launcher (initstudy.stacked): each member of a group is its single run, bit for bit, on tiny
synthetic data; groups form only where they may; a sweep through ``hydra/launcher=stacked`` writes what the
basic launcher writes and resumes member by member."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import python_module, run
from initstudy.config.compose import compose_config
from initstudy.core import atomic
from initstudy.core.errors import ConfigError
from initstudy.nn import weights
from initstudy.runs import rundir

BASE = ["logger=offline", "data.batch_size=32", "data.val_size=100", "trainer.max_epochs=2",
        "module.val_every_n_steps=5"]  # fmt: skip
EXPLODING = "_target_: initstudy.nn.initializers.RandomNormal\nname: exploding\nstd: 1.0e+4\n"
# Activations and gradients that underflow to subnormals within 8 layers (0.02 x sqrt(16) per layer).
VANISHING = "_target_: initstudy.nn.initializers.RandomNormal\nname: vanishing\nstd: 2.0e-6\n"


@pytest.fixture
def study_root(study_root: Path) -> Path:
    """conftest's study root, plus an initializer that diverges."""
    (study_root / "conf/init/exploding.yaml").write_text(EXPLODING)
    (study_root / "conf/init/vanishing.yaml").write_text(VANISHING)
    return study_root


def configs(root: Path, jobs: list[tuple[str, int]], *overrides: str) -> list:
    return [compose_config([*BASE, f"data.root={root / 'data'}", *overrides, f"init={init}", f"seed={seed}"])
            for init, seed in jobs]  # fmt: skip


def single_run_files(cfg, out: Path) -> dict[str, bytes]:
    """The result files of ``cfg``'s one-job run (runner.train_run), as bytes."""
    from initstudy.train.fit import train_run

    train_run(cfg, out, rundir.staging_dir(out), "test")
    names = ["metrics.json", "history.csv", rundir.PREDICTIONS, *rundir.WEIGHT_FILES]
    if (out / rundir.LAYER_STATS).is_file():
        names.append(rundir.LAYER_STATS)
    return {name: (out / name).read_bytes() for name in names}


def stacked_files(cfgs: list, staging: Path, threads: int = 1) -> list[dict[str, bytes]]:
    """Each member's result files from one stacked group (initstudy.train.fit), as the runner writes them;
    ``threads``: its members in that many shards, each trained on a thread of its own."""
    from initstudy.train.fit import fit
    from initstudy.train.runner import write_predictions

    files = []
    outcomes = fit(cfgs, staging, [None] * len(cfgs), 0, [""] * len(cfgs), threads)
    assert {outcome.timing["stacked_shards"] for outcome in outcomes} == {min(threads, len(cfgs))}
    for outcome in outcomes:
        out = staging / str(len(files))
        atomic.write_json(out / "metrics.json", outcome.metrics)
        member = {"metrics.json": (out / "metrics.json").read_bytes(),
                  "history.csv": outcome.history.to_csv(index=False).encode()}  # fmt: skip
        if outcome.layer_stats is not None:
            member[rundir.LAYER_STATS] = outcome.layer_stats.to_csv(index=False).encode()
        assert outcome.test_predictions is not None
        write_predictions(out / rundir.PREDICTIONS, outcome.test_predictions)
        member[rundir.PREDICTIONS] = (out / rundir.PREDICTIONS).read_bytes()
        for name, state in outcome.weights.items():
            buffer = io.BytesIO()
            torch.save(state, buffer)
            member[name] = buffer.getvalue()
        files.append(member)
    return files


JOBS = [("he_uniform", 0), ("he_uniform", 1), ("zeros", 0), ("glorot_uniform", 2)]


DEFAULTS: list[str] = []  # ReLU, fused Adam (the study's defaults)
# A per-member activation (tanh), SGD with momentum, sizes that leave scalar tails, a short last batch.
ODD = ["model.activation=tanh", "optimizer=sgd", "optimizer.lr=0.05", "model.hidden_sizes=[30,20]",
       "data.batch_size=17"]  # fmt: skip


# tanh on the whole stack at once: members' activations are multiples of 64 elements (32 x 64, 32 x 32);
# per-layer probes every 7 steps (layer_stats.csv: the same bytes as the single run's too).
ALIGNED = ["model.activation=tanh", "model.hidden_sizes=[64,32]", "module.layer_stats_every_n_steps=7"]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(DEFAULTS, id="relu-adam"),  # the study's own path stays in make test-fast
        pytest.param(ODD, id="tanh-sgd-odd-sizes", marks=pytest.mark.slow),
        pytest.param(ALIGNED, id="tanh-adam-aligned", marks=pytest.mark.slow),
    ],
)
def test_every_member_is_its_single_run_bit_for_bit(study_root: Path, tmp_path: Path, overrides: list[str]):
    """Initial weights, final weights, metrics.json and history.csv: the same bytes as each job's own run
    (CPU, portable profile). Not merely close: the stacked kernels were chosen so (initstudy.train.network)."""
    cfgs = configs(study_root, JOBS, *overrides)
    stacked = stacked_files(cfgs, tmp_path / "group")
    for (init, seed), cfg, member in zip(JOBS, cfgs, stacked, strict=True):
        single = single_run_files(cfg, tmp_path / "single" / init / str(seed))
        assert set(member) == set(single)
        for name in single:
            assert member[name] == single[name], f"{init}/seed_{seed}: {name}"
    # Run to run: the same bytes again; and with the members in shards on threads (3 shards: 2, 1, 1 members).
    assert stacked_files(cfgs, tmp_path / "again") == stacked
    assert stacked_files(cfgs, tmp_path / "threads", threads=3) == stacked


def test_members_on_other_threads_flush_subnormals_as_their_single_runs_do(study_root: Path, tmp_path: Path):
    """Flush-to-zero is per-thread CPU state: a shard's thread must flush subnormals as the run's own thread
    does (numerics=portable: on), or a deep network whose signal underflows computes other numbers, slowly."""
    jobs = [("vanishing", 0), ("vanishing", 1)]
    cfgs = configs(study_root, jobs, "model.hidden_sizes=[16,16,16,16,16,16,16,16]", "trainer.max_epochs=1")
    stacked = stacked_files(cfgs, tmp_path / "group", threads=2)
    for (init, seed), cfg, member in zip(jobs, cfgs, stacked, strict=True):
        single = single_run_files(cfg, tmp_path / "single" / init / str(seed))
        for name in single:
            assert member[name] == single[name], f"{init}/seed_{seed}: {name}"


@pytest.mark.slow
def test_a_diverging_member_stops_alone_and_changes_no_other_member(study_root: Path, tmp_path: Path):
    """An initializer that explodes under SGD: that member records its divergence as its single run does and
    stops; the others train on, their results unchanged by its presence."""
    sgd = ("optimizer=sgd", "optimizer.lr=0.5", "trainer.max_epochs=3")
    calm = [("he_uniform", 0), ("he_uniform", 1)]
    with_exploding = stacked_files(configs(study_root, [*calm, ("exploding", 2)], *sgd), tmp_path / "a")
    without = stacked_files(configs(study_root, calm, *sgd), tmp_path / "b")
    assert with_exploding[:2] == without
    # In shards on two threads, the exploding member's shard stops training while the other trains on.
    shards = configs(study_root, [("exploding", 2), *calm], *sgd)
    assert stacked_files(shards, tmp_path / "c", threads=2)[1:] == without
    exploded = json.loads(with_exploding[2]["metrics.json"])
    assert exploded["diverged"] is True and exploded["epochs_completed"] == 1
    calm_metrics = json.loads(with_exploding[0]["metrics.json"])
    assert calm_metrics["diverged"] is False and calm_metrics["epochs_completed"] == 3
    single = single_run_files(configs(study_root, [("exploding", 2)], *sgd)[0], tmp_path / "single")
    for name in ("metrics.json", "history.csv", weights.INITIAL):
        assert with_exploding[2][name] == single[name], name


# ---- grouping ------------------------------------------------------------------------------------------------


def plan_of(
    root: Path, jobs: list[list[str]], max_models: int, complete: set[int] = frozenset(), workers: int = 1
) -> list:
    from initstudy.stacked.grouping import Candidate, plan

    cfgs = [compose_config([*BASE, f"data.root={root / 'data'}", *job]) for job in jobs]
    return plan([Candidate(i, cfg, i in complete) for i, cfg in enumerate(cfgs)], max_models, workers)


def test_jobs_group_when_they_differ_only_in_init_and_seed(study_root: Path):
    jobs = [["init=zeros", "seed=0"], ["init=he_uniform", "seed=0"], ["init=zeros", "seed=1", "optimizer.lr=0.01"],
            ["init=he_uniform", "seed=1", "optimizer.lr=0.01"], ["init=zeros", "seed=3", "data.batch_size=16"],
            ["init=he_uniform", "seed=2"]]  # fmt: skip
    assert plan_of(study_root, jobs, 32) == [[0, 1, 5], [2, 3], [4]]


@pytest.mark.slow
def test_max_models_cuts_groups_of_balanced_sizes_and_a_group_of_one_runs_alone(study_root: Path):
    jobs = [[f"init={init}", f"seed={seed}"] for init in ("zeros", "he_uniform") for seed in (0, 1, 2)]
    assert plan_of(study_root, jobs, 4) == [[0, 1, 2], [3, 4, 5]]
    assert plan_of(study_root, jobs, 5) == [[0, 1, 2], [3, 4, 5]]
    assert plan_of(study_root, jobs, 2) == [[0, 1], [2, 3], [4, 5]]
    assert plan_of(study_root, jobs, 1) == [[i] for i in range(6)]


@pytest.mark.slow
def test_workers_split_a_sweep_into_at_least_as_many_units(study_root: Path):
    jobs = [[f"init={init}", f"seed={seed}"] for init in ("zeros", "he_uniform") for seed in range(5)]
    assert plan_of(study_root, jobs, 32, workers=2) == [list(range(5)), list(range(5, 10))]
    assert plan_of(study_root, jobs, 4, workers=2) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert plan_of(study_root, jobs, 32, workers=4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert plan_of(study_root, jobs, 32, workers=16) == [[i] for i in range(10)]
    # Another key (a learning rate) is a unit of its own; complete jobs do not count as work.
    mixed = [*jobs[:6], ["init=zeros", "seed=0", "optimizer.lr=0.01"]]
    assert plan_of(study_root, mixed, 32, workers=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_of(study_root, mixed, 32, complete={6}, workers=3) == [[0, 1], [2, 3], [4, 5], [6]]


def test_complete_and_unstackable_jobs_run_one_by_one(study_root: Path):
    jobs = [["init=zeros", "seed=0"], ["init=he_uniform", "seed=0"], ["init=zeros", "seed=1"],
            ["init=zeros", "seed=0", "trainer.precision=bf16-mixed"],
            ["init=he_uniform", "seed=0", "trainer.precision=bf16-mixed"]]  # fmt: skip
    assert plan_of(study_root, jobs, 32, complete={1}) == [[0, 2], [1], [3], [4]]


@pytest.mark.slow
def test_jobs_with_callbacks_or_optional_trainer_keys_run_alone(study_root: Path):
    """Early stopping and checkpoints are each run's own; a debug or clipping setting is never shared."""
    from initstudy.stacked.grouping import unsupported

    extras = [["+callbacks=early_stopping"], ["+callbacks=checkpoint"], ["debug=fast_dev_run"], ["debug=tiny"],
              ["trainer.gradient_clip_val=1.0"], ["trainer.limit_train_batches=2"]]  # fmt: skip
    jobs = [[f"init={init}", "seed=0", *extra] for extra in extras for init in ("zeros", "he_uniform")]
    assert plan_of(study_root, jobs, 32) == [[i] for i in range(len(jobs))]
    cfg = compose_config(
        [*BASE, f"data.root={study_root / 'data'}", "+callbacks=[checkpoint,early_stopping]"]
    )
    assert unsupported(cfg) == "callbacks (checkpoint, early_stopping)"


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_max_models_must_be_a_positive_integer(bad: object):
    from hydra_plugins.initstudy_stacked.stacked_launcher import StackedLauncher

    with pytest.raises(ConfigError, match=rf"^invalid hydra.launcher.max_models={bad!r}: must be a positive"):
        StackedLauncher(max_models=bad).setup(hydra_context=None, task_function=None, config=None)


@pytest.mark.parametrize("bad", [0, 1.5, True, "2"])
def test_n_jobs_must_be_a_non_zero_integer(bad: object):
    from hydra_plugins.initstudy_stacked.stacked_launcher import StackedLauncher

    with pytest.raises(
        ConfigError, match=rf"^invalid hydra.launcher.n_jobs={bad!r}: must be a non-zero integer"
    ):
        StackedLauncher(n_jobs=bad).setup(hydra_context=None, task_function=None, config=None)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_threads_must_be_a_positive_integer_or_minus_one(bad: object):
    from hydra_plugins.initstudy_stacked.stacked_launcher import StackedLauncher

    with pytest.raises(
        ConfigError, match=rf"^invalid hydra.launcher.threads={bad!r}: must be a positive integer"
    ):
        StackedLauncher(threads=bad).setup(hydra_context=None, task_function=None, config=None)


def test_threads_default_to_the_cpus_shared_out_among_the_workers():
    from joblib import cpu_count

    from initstudy.stacked.grouping import threads_per_unit
    from initstudy.train.network import shard_bounds

    assert threads_per_unit(3, 8) == 3
    assert threads_per_unit(-1, 1) == cpu_count()
    assert threads_per_unit(-1, cpu_count() + 1) == 1
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2)]  # never an empty shard


# ---- through Hydra -------------------------------------------------------------------------------------------

RESULTS = (
    "metrics.json",
    "history.csv",
    "config.yaml",
    "numerics.json",
    rundir.PREDICTIONS,
    *rundir.WEIGHT_FILES,
)
SWEEP = [(init, seed) for init in ("zeros", "he_uniform") for seed in (0, 1)]


def run_folder_bytes(repo: Path) -> dict[tuple[str, int], dict[str, bytes]]:
    """The result files of every run, numerics.json included (each job applies its profile before describing
    it, whichever job a process runs first)."""
    files = {(init, seed): {name: (repo / "runs" / init / f"seed_{seed}" / name).read_bytes() for name in RESULTS}
             for init, seed in SWEEP}  # fmt: skip
    return files


def children(repo: Path) -> tuple[list, list]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("initstudy").experiment_id])
    return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])  # fmt: skip


@pytest.mark.slow
def test_stacked_sweep_writes_what_the_basic_launcher_writes_and_resumes_member_by_member(
    synthetic_data_repo: Path,
):
    repo = synthetic_data_repo
    run(python_module("initstudy.train", "--multirun"), repo)
    basic = run_folder_bytes(repo)
    _, basic_children = children(repo)
    for leftover in ("runs", "mlartifacts"):
        shutil.rmtree(repo / leftover)
    (repo / "mlflow.db").unlink()

    # max_models=3, two workers: two groups of two, each trained in its own worker process at once.
    stacked = run(python_module("initstudy.train", "--multirun", "hydra/launcher=stacked",
                                "hydra.launcher.max_models=3", "hydra.launcher.n_jobs=2",
                                "hydra.launcher.threads=1"), repo)  # fmt: skip
    assert (
        "4 jobs: 4 in 2 stacked group(s) of at most 3, 0 one by one; 2 worker process(es), 1 thread(s)"
        in (stacked.stdout + stacked.stderr)
    )
    # Hydra's sweeper check, the pre-flight's batch check and the launcher shared one composition of each job
    # (sweep.launching.ComposeOnce), and its run folder is still byte for byte the basic launcher's (.hydra/).
    assert "job configs: 4 composed by Hydra, 4 reused" in stacked.stdout + stacked.stderr
    assert run_folder_bytes(repo) == basic
    for init, seed in SWEEP:
        folder = repo / "runs" / init / f"seed_{seed}"
        assert rundir.is_complete(folder, rundir.read_marker(folder)["identity"])
        assert (folder / ".hydra/overrides.yaml").is_file() and (folder / "train.log").is_file()
    parents, stacked_children = children(repo)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in stacked_children) == sorted(f"{i}/seed_{s}" for i, s in SWEEP)
    by_name = {r.info.run_name: r for r in basic_children}
    for child in stacked_children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.metrics == by_name[child.info.run_name].data.metrics
        assert child.data.params == by_name[child.info.run_name].data.params

    # Two members lose their completion: the rerun trains those two only, as one group in this process.
    for init, seed in (("zeros", 1), ("he_uniform", 0)):
        (repo / "runs" / init / f"seed_{seed}" / rundir.MARKER).unlink()
    # In this process, the group's two members in two shards, each on a thread of its own.
    again = run(python_module("initstudy.train", "--multirun", "hydra/launcher=stacked", "hydra.launcher.n_jobs=1",
                              "hydra.launcher.threads=2"), repo)  # fmt: skip
    output = again.stdout + again.stderr
    assert ("4 jobs: 2 in 1 stacked group(s) of at most 32, 2 one by one; 1 worker process(es), 2 thread(s) per "
            "group") in output  # fmt: skip
    assert output.count("skipped") == 2
    assert run_folder_bytes(repo) == basic


@pytest.mark.slow
def test_workers_die_with_a_killed_launcher_and_the_rerun_completes_every_run(synthetic_data_repo: Path):
    """SIGKILL of the launching process while its two workers train: the workers exit within seconds (they
    watch their parent) instead of training on unlocked; the same command afterwards completes every run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    repo = synthetic_data_repo
    command = python_module("initstudy.train", "--multirun", "hydra/launcher=stacked", "hydra.launcher.max_models=2",
                            "hydra.launcher.n_jobs=2", "trainer.max_epochs=400", "logger=offline")  # fmt: skip
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    launcher = subprocess.Popen(
        command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600  # generous: on a loaded machine start-up alone can take minutes
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and not any((repo / "runs").rglob("train.log")):
        time.sleep(0.5)  # the groups have started (a member's job log exists)
    while time.monotonic() < deadline:  # both workers, whichever started first
        workers = [
            p for p in psutil.Process(launcher.pid).children() if "LokyProcess" in " ".join(p.cmdline())
        ]
        if len(workers) == 2:
            break
        time.sleep(0.5)
    assert len(workers) == 2
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]
    run([*command[:-2], "trainer.max_epochs=2", "logger=offline"], repo)
    for init, seed in SWEEP:
        folder = repo / "runs" / init / f"seed_{seed}"
        assert rundir.is_complete(folder, rundir.read_marker(folder)["identity"])


def test_a_job_config_composed_once_is_what_hydras_loader_composes(monkeypatch):
    """ComposeOnce hands Hydra's sweeper, the batch check and the launcher a copy of what Hydra's own loader
    composed for the same overrides (hydra node included), composing each job once; a pickled loader (a SLURM
    job) carries no other job's config."""
    import pickle

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from initstudy.config.compose import PRIMARY_CONFIG
    from initstudy.core.paths import repo_root
    from initstudy.sweep.launching import ComposeOnce

    monkeypatch.chdir(repo_root())
    job = ["experiment=depth", "init=orthogonal_critical", "model.activation=relu", "model.depth=5", "seed=3"]
    other = ["init=he_uniform", "seed=1"]
    with initialize_config_dir(config_dir=str(repo_root()), version_base="1.3", job_name="initstudy"):
        master = compose(PRIMARY_CONFIG, overrides=["hydra.job.chdir=false"], return_hydra_config=True)
        master.hydra.job.config_name = PRIMARY_CONFIG
        hydra_loader = GlobalHydra.instance().config_loader()
        once = ComposeOnce(hydra_loader)
        for overrides in (job, other, job):
            ours = once.load_sweep_config(master, list(overrides))
            hydras = hydra_loader.load_sweep_config(master, list(overrides))
            assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras)
        assert (len(once.composed), once.hits) == (2, 1)
        copy = once.load_sweep_config(master, list(job))
        copy.seed = 4
        assert once.load_sweep_config(master, list(job)).seed == 3
        assert once.load_sweep_config(master, list(job)).init.gain == 2**0.5
        assert pickle.loads(pickle.dumps(once)).composed == {}


def test_workers_take_the_unit_with_the_most_work_first(monkeypatch):
    """A deep group of few members outweighs a shallow group of many: members x parameters x images."""
    from initstudy.config.compose import compose_config
    from initstudy.core.paths import repo_root
    from initstudy.stacked.grouping import unit_work

    monkeypatch.chdir(repo_root())
    shallow = [compose_config(["experiment=depth", "model.depth=2", f"seed={s}"]) for s in range(5)]
    deep = [compose_config(["experiment=depth", "model.depth=30", f"seed={s}"]) for s in range(2)]
    parameters = {2: 785 * 128 + 129 * 128 + 129 * 10, 30: 785 * 128 + 29 * 129 * 128 + 129 * 10}
    assert unit_work(shallow) == 5 * parameters[2] * 10_000
    assert unit_work(deep) == 2 * parameters[30] * 10_000 > unit_work(shallow)
    default = compose_config([])  # all 50,000 training images (10,000 held out) x 10 epochs
    assert unit_work([default]) == (785 * 256 + 257 * 128 + 129 * 10) * 50_000 * 10


def test_shard_threads_mirror_flush_to_zero_and_raise_only_once_every_shard_has_finished():
    """Each shard on its own thread (the calling thread takes shard 0); a new thread flushes subnormals as
    the creating thread does, whatever the CPU's inheritance rules; an error is raised once no shard runs."""
    import threading
    import time

    from initstudy.train.threads import ShardThreads, subnormals_flushed

    before = subnormals_flushed()
    try:
        for flushed in (True, False):
            torch.set_flush_denormal(flushed)
            threads = ShardThreads(3)
            # Every shard waits for the others at a barrier: the map returns only if the three ran at once,
            # which needs three distinct threads (a pool may otherwise hand an idle worker a second shard).
            together = threading.Barrier(3, timeout=60)

            def meet(k: int, together: threading.Barrier = together) -> tuple[int, str, bool]:
                together.wait()
                return k, threading.current_thread().name, subnormals_flushed()

            names = threads.map(meet)
            assert [k for k, _, _ in names] == [0, 1, 2] and {f for _, _, f in names} == {flushed}
            assert names[0][1] == threading.current_thread().name and len({n for _, n, _ in names}) == 3
            finished: list[int] = []

            def work(k: int, finished: list[int] = finished) -> int:
                if k == 0:
                    raise ValueError("shard 0 failed")
                time.sleep(0.2)
                finished.append(k)
                return k

            with pytest.raises(ValueError, match="shard 0 failed"):
                threads.map(work)
            assert sorted(finished) == [1, 2]
            threads.close()
    finally:
        torch.set_flush_denormal(before)
