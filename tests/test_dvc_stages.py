"""dvc.yaml names what each stage reads, exactly: the code its entry point imports or instantiates, and the
config values its jobs compose. Every edit that can change a stage's outputs marks that stage in
``dvc status`` (and ``dvc repro`` re-runs it); an edit that cannot (a comment, a launcher or MLflow setting,
the report's code for train) marks nothing, or only the stages that read it."""

from __future__ import annotations

import itertools
import json
import modulefinder
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SyntheticMNIST, dvc, make_study_repo, run
from initstudy.config.compose import compose_config
from initstudy.runs import rundir

# The project's code: the package, and its Hydra launcher plugins (src/hydra_plugins/initstudy_*).
SOURCE = REPO / "src"
PACKAGE = SOURCE / "initstudy"
PLUGINS = SOURCE / "hydra_plugins"


def resolved_stages() -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them: anchors, ``foreach`` items (``report_paper@notebook``) and
    ``${...}`` filled in, by DVC's own parser (as initstudy.runs.rundir reads the train stage)."""
    from dvc.dvcfile import load_file
    from dvc.fs import LocalFileSystem
    from dvc.repo import Repo

    with Repo(str(REPO), fs=LocalFileSystem(), uninitialized=True, config={"core": {"no_scm": True}}) as repo:
        return load_file(repo, str(REPO / "dvc.yaml")).resolver.resolve()["stages"]


STAGES = resolved_stages()
# Groups whose options change a stage's outputs, per entry point (launcher, logger and download settings do
# not; `hydra` is the run-folder layout, which names the outputs).
RESULT_GROUPS = {
    "initstudy.train": ("init", "model", "optimizer", "data", "trainer", "module", "numerics"),
    "initstudy.diagnose": ("init", "model", "data", "numerics"),
}
# A preset's own groups (conf/experiment/epsilon.yaml's cells and optimizer arms): where a stage's jobs compose
# them, every option of theirs is tracked too; stages that never compose them do not track them.
# The tuned comparison's arms (conf/tuned_arm/: each initializer at its chosen rate, written by choose_lr, and at 1e-3).
PRESET_GROUPS = ("depth_cell", "optimizer_arm", "tuned_arm")
ALL_STAGES = set(STAGES)
TRAINING_ENTRY = "initstudy.train"


def entry_module(stage: dict) -> str:
    return stage["cmd"].split()[2]


def module_file(name: str) -> Path | None:
    """The package file of module ``name`` (``initstudy.x.y``), or None for a module of another package."""
    if not name.startswith("initstudy"):
        return None
    base = REPO / "src" / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py", base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def instantiated_modules() -> set[str]:
    """Package modules that the configs name as ``_target_`` (built by hydra.utils.instantiate, never imported
    by name, so an import scan cannot see them). Launchers apart: :func:`project_launchers`."""
    return {target.rsplit(".", 1)[0] for target in config_targets(REPO / "conf", "initstudy.")}


def config_targets(folder: Path, prefix: str) -> set[str]:
    """Every ``_target_`` starting with ``prefix`` in the YAML files under ``folder``."""
    targets = set()
    for path in folder.rglob("*.yaml"):
        stack = [yaml.safe_load(path.read_text())]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                target = node.get("_target_")
                if isinstance(target, str) and target.startswith(prefix):
                    targets.add(target)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return targets


THIRD_PARTY_PLUGINS = ["hydra_plugins"]  # imported by name only from the project's launchers (run as scripts)


def project_launchers() -> set[Path]:
    """The files of the project's own launchers (conf/hydra/launcher/, e.g. ``stacked``): every one, not only
    the one a stage's command names. Any launcher may write the runs a stage then reuses (a sweep started by
    hand with hydra/launcher=stacked, then `dvc repro` with joblib), so a run's code identity must cover the
    code of every launcher that can train it; a launcher's settings change no result and stay untracked."""
    files = set()
    for target in config_targets(REPO / "conf/hydra/launcher", "hydra_plugins.initstudy_"):
        path = SOURCE / Path(*target.rsplit(".", 1)[0].split(".")).with_suffix(".py")
        assert path.is_file(), target
        files.add(path)
    return files


def imported_files(script: Path, extra_modules: set[str] = frozenset()) -> set[Path]:
    """The files ``script`` imports at any depth (lazy imports included), plus ``extra_modules``'."""
    # Third-party Hydra plugins share the hydra_plugins namespace package, which modulefinder cannot follow
    # out of src/ (the SLURM launcher extends submitit's): not project code, left out.
    finder = modulefinder.ModuleFinder(path=[str(SOURCE)], excludes=THIRD_PARTY_PLUGINS)
    finder.run_script(str(script))
    for name in extra_modules:
        finder.import_hook(name)
    return {Path(m.__file__).resolve() for m in finder.modules.values() if m.__file__}


def is_project_code(path: Path) -> bool:
    return path.is_relative_to(PACKAGE.resolve()) or (
        path.is_relative_to(PLUGINS.resolve())
        and path.relative_to(PLUGINS.resolve()).parts[0].startswith("initstudy_")
    )


def code_closure(entry: str) -> set[str]:
    """Every project file the entry point imports (at any depth, lazy imports included) or instantiates; for
    the training entry point also every project launcher and what it imports (:func:`project_launchers`)."""
    main = module_file(entry)
    assert main is not None, entry
    if main.name == "__init__.py":
        main = main.with_name("__main__.py")
    files = imported_files(main, instantiated_modules() if entry in RESULT_GROUPS else set())
    if entry == TRAINING_ENTRY:
        for launcher in project_launchers():  # one finder per script: a finder keeps one __main__
            files |= imported_files(launcher)
    return {f.relative_to(REPO).as_posix() for f in files if is_project_code(f)}


def code_deps(stage: dict) -> set[str]:
    """The stage's code deps as files: a package folder stands for every ``.py`` file under it."""
    files = set()
    for dep in stage["deps"]:
        if not dep.startswith("src/"):
            continue
        folder = REPO / dep
        assert folder.exists(), dep
        if folder.is_dir():
            files |= {
                path.relative_to(REPO).as_posix()
                for path in folder.rglob("*.py")
                if "__pycache__" not in path.parts
            }
        else:
            files.add(dep)
    return files


def tracked_files(stage: dict) -> set[str]:
    return {name for p in stage.get("params", []) if isinstance(p, dict) for name in p}


def test_dvc_yaml_is_short_enough_to_read():
    """Folders as deps, YAML anchors for the lists and flags several stages share, and flow style keep the file
    readable. A report stage cannot share its code list by an anchor (its runs and claims file follow in the same
    list), so each experiment's train -> report chain adds about 20 lines: 7 chains and the default study fit
    in 300."""
    assert len((REPO / "dvc.yaml").read_text().splitlines()) <= 300


@pytest.mark.slow
def test_a_folder_dep_is_named_only_where_the_stage_runs_every_file_in_it():
    """A folder stands for all its files, so naming one where a file of it is not run would over-track."""
    for name, stage in STAGES.items():
        closure = code_closure(entry_module(stage))
        for dep in stage["deps"]:
            if dep.startswith("src/") and (REPO / dep).is_dir():
                files = {p.relative_to(REPO).as_posix() for p in (REPO / dep).rglob("*.py")}
                assert files <= closure, (name, dep, sorted(files - closure))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_what_the_entry_point_runs(name):
    stage = STAGES[name]
    assert code_deps(stage) == code_closure(entry_module(stage))


def test_run_identity_covers_the_train_stages_code():
    assert rundir.training_code(REPO) == sorted(d.removeprefix("src/") for d in code_deps(STAGES["train"]))
    assert any((REPO / dep).is_dir() for dep in STAGES["train"]["deps"]), "folder deps expand to their files"
    assert "hydra_plugins/initstudy_stacked/stacked_launcher.py" in rundir.training_code(REPO)
    assert "initstudy/train/network.py" in rundir.training_code(REPO)
    for name in TRAIN_STAGES:  # every sweep's runs share one code identity
        assert code_deps(STAGES[name]) == code_deps(STAGES["train"]), name


def copy_pipeline(tmp_path: Path, dvc_yaml: str) -> Path:
    """A folder DVC takes for a repository (.dvc/config, no git) holding ``dvc_yaml``."""
    (tmp_path / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc/config", tmp_path / ".dvc/config")
    (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    return tmp_path


def test_run_identity_reads_dvc_yaml_as_dvc_does(tmp_path):
    """Templating (``vars`` and ``${...}``) is DVC's: a dep written with it is the same dep."""
    text = (REPO / "dvc.yaml").read_text()
    assert text.count(" src/initstudy/nn,") >= 1 and not text.startswith("vars:")
    templated = "vars:\n  - code: src/initstudy\n" + text.replace(" src/initstudy/nn,", " '${code}/nn',", 1)
    assert rundir.training_code(copy_pipeline(tmp_path, templated)) == rundir.training_code(REPO)
    shutil.rmtree(tmp_path / ".dvc")  # a bare copy of the study (no .dvc/, no git) reads the same
    assert rundir.training_code(tmp_path) == rundir.training_code(REPO)


@pytest.mark.parametrize(
    ("dvc_yaml", "words"),
    [
        ("stages:\n  train:\n    cmd: x\n   deps: [a\n", ["dvc.yaml", "`train`", "YAML"]),
        ("stages:\n  report:\n    cmd: x\n", ["dvc.yaml", "`train`", "Could not find 'train'"]),
        ("stages:\n  train:\n    cmd: x\n    deps: ['${nope}/x']\n", ["dvc.yaml", "`train`", "'nope'"]),
        (
            "stages:\n  train:\n    cmd: x\n    deps: [data/raw]\n",
            ["dvc.yaml", "lists no src/initstudy/ file"],
        ),
    ],
)
def test_a_pipeline_dvc_cannot_read_is_one_line(tmp_path, dvc_yaml, words):
    with pytest.raises(rundir.RunFolderError) as caught:
        rundir.training_code(copy_pipeline(tmp_path, dvc_yaml))
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message


def group_choices_of_sweep(overrides: list[str]) -> list[list[str]]:
    """Each combination of group choices the sweep in hydra.sweeper.params makes (a value override such as
    ``seed=0,1`` or ``model.depth=2,5`` changes no choice, so it is left out)."""
    params = compose_config(overrides, return_hydra_config=True).hydra.sweeper.params
    groups = {path.name for path in (REPO / "conf").iterdir() if path.is_dir()}
    axes = [
        [f"{key}={value}" for value in str(values).split(",")]
        for key, values in params.items()
        if key in groups
    ]
    return [overrides + list(job) for job in itertools.product(*axes)]


@pytest.mark.parametrize("name", [n for n, s in sorted(STAGES.items()) if entry_module(s) in RESULT_GROUPS])
def test_every_option_file_of_a_result_group_is_tracked_by_value(name):
    """Each option the stage's jobs compose, and every other option of those groups (a later choice must not
    meet stale results), is in the stage's params; nothing else from those groups is."""
    stage = STAGES[name]
    arguments = [arg.strip("'") for arg in stage["cmd"].split()[3:]]
    overrides = [arg for arg in arguments if "=" in arg and not arg.startswith(("hydra/", "hydra.", "--"))]
    # A value swept on the command line (diagnose_depth's seed=0,1) changes no group choice.
    overrides = [arg for arg in overrides if "," not in arg.split("=", 1)[1]]
    # A sweep axis taken out (train_epsilon's ~hydra.sweeper.params.init: its cells name the initializer).
    overrides += [arg for arg in arguments if arg.startswith("~hydra.sweeper.params.")]
    jobs = [
        compose_config(job, return_hydra_config=True).hydra.runtime.choices
        for job in group_choices_of_sweep(overrides)
    ]
    groups = (*RESULT_GROUPS[entry_module(stage)], *(g for g in PRESET_GROUPS if any(g in c for c in jobs)))
    composed = {
        f"conf/{group}/{choices[group]}.yaml" for choices in jobs for group in groups if group in choices
    }
    every_option = {
        path.relative_to(REPO).as_posix()
        for group in groups
        for path in (REPO / "conf" / group).glob("*.yaml")
    }
    tracked = tracked_files(stage)
    assert composed <= tracked, composed - tracked
    assert every_option - tracked == set()
    assert "defaults" in stage["params"]


def test_settings_that_change_no_result_are_not_tracked():
    for stage in STAGES.values():
        tracked = tracked_files(stage)
        assert not any(f.startswith(("conf/hydra/launcher/", "conf/logger/")) for f in tracked)
        data = next(
            (p["conf/data/mnist.yaml"] for p in stage.get("params", []) if "conf/data/mnist.yaml" in p), []
        )
        assert "steps_per_chunk" not in (data or [])
        assert "conf" not in stage.get("deps", []), (
            "a whole-folder dependency would count comments and launchers"
        )


# ---- what dvc status says about each kind of edit, in a temporary repo -----------------------------------


@pytest.fixture(scope="module")
def committed_repo(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """A study repo whose dvc.lock records every stage as up to date (outputs stand in as empty files: the
    status of deps and params is what is tested; an output the repo already holds, the chosen learning rates
    conf/tuned_arm/<init>_chosen.yaml that train_tuned composes, stays as it is)."""
    repo = make_study_repo(tmp_path_factory.mktemp("dvcstages"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    for stage in STAGES.values():
        for out in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            path = repo / (out if isinstance(out, str) else next(iter(out)))
            if path.is_file():
                continue
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}\n" if path.suffix == ".json" else "x\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder").write_text("x\n")
    run(dvc("commit", "-f", "-q"), repo)
    run(["git", "add", "-A", "-f", "dvc.lock"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"], repo)
    assert changed_stages(repo) == set()
    return repo


def changed_stages(repo: Path) -> set[str]:
    result = run(dvc("status", "--json"), repo)
    return set(json.loads(result.stdout or "{}"))


def edit(repo: Path, path: str, old: str | None, new: str) -> None:
    """Replace ``old`` by ``new`` once in ``repo/path``, or append ``new`` when ``old`` is None."""
    target = repo / path
    text = target.read_text()
    assert old is None or old in text, (path, old)
    target.write_text(text + new if old is None else text.replace(old, new, 1))


# Every train and diagnose stage composes the training config: the default study, the depth experiment and the
# classic papers' presets (train_<paper>, diagnose_<paper>).
TRAINING_STAGES = {name for name in STAGES if name.startswith(("train", "diagnose"))}
TRAIN_STAGES = {name for name in STAGES if name.startswith("train")}
REPORT_STAGES = {name for name in STAGES if name.startswith("report")}
# kind of edit: (file, text replaced (None: appended), new text, the stages dvc status must mark)
EDITS = {
    "comment in params.yaml": ("params.yaml", "seed: 0", "seed: 0  # the first seed", set()),
    "comment in an option": ("conf/init/he_uniform.yaml", "_target_", "# He (2015)\n_target_", set()),
    "launcher setting": ("conf/hydra/launcher/slurm.yaml", "mem_gb: 4", "mem_gb: 6", set()),
    "MLflow setting": ("conf/logger/mlflow.yaml", "initstudy", "initstudy-2", set()),
    "download timeout": ("conf/download/default.yaml", "timeout_s: 10", "timeout_s: 20", set()),
    "a speed knob": ("conf/data/mnist.yaml", "steps_per_chunk: 32", "steps_per_chunk: 16", set()),
    "report code": ("src/initstudy/report/markdown.py", None, "\n# wording\n", REPORT_STAGES),
    "a paper's report code": (
        "src/initstudy/report/papers/saxe2014.py",
        None,
        "\n# wording\n",
        REPORT_STAGES,
    ),
    "a paper's preset": (
        "conf/experiment/saxe2014.yaml",
        "max_epochs: 2",
        "max_epochs: 3",
        {"train_saxe2014"},
    ),
    "the notebook's preset": (
        "conf/experiment/notebook.yaml",
        "max_epochs: 10",
        "max_epochs: 9",
        {"train_notebook"},
    ),
    "the notebook's claims": (
        "conf/experiment/claims/notebook.yaml",
        "min_seeds: 5",
        "min_seeds: 6",
        {"report_paper@notebook"},
    ),
    "download code": ("src/initstudy/data/fetch.py", None, "\n# note\n", {"download"}),
    "learning rate": ("params.yaml", "lr: 0.001", "lr: 0.002", {"train", "train_depth"}),
    "optimizer choice": ("params.yaml", "optimizer: adam", "optimizer: sgd", TRAINING_STAGES),
    "an initializer's value": ("conf/init/lsuv.yaml", "tolerance: 0.05", "tolerance: 0.1", TRAINING_STAGES),
    "depth experiment's epochs": (
        "conf/experiment/depth.yaml",
        "max_epochs: 1",
        "max_epochs: 2",
        {"train_depth"},
    ),
    # A hand edit of the chosen rates: train_tuned trains at them, and choose_lr writes the grid's choice again.
    "the chosen rates": (  # whatever rate the grid chose: 0.003 becomes 10.003
        "conf/tuned_arm/he_uniform_chosen.yaml",
        "  lr: ",
        "  lr: 1",
        {"choose_lr", "train_tuned"},
    ),
    "a fixed arm": ("conf/tuned_arm/he_uniform_fixed.yaml", "lr: 0.001", "lr: 0.002", {"train_tuned"}),
    "the tuned preset": ("conf/experiment/tuned.yaml", "max_epochs: 3", "max_epochs: 2", {"train_tuned"}),
    "training code": ("src/initstudy/train/module.py", None, "\n#\n", TRAINING_STAGES),
    "stacked launcher code": ("src/initstudy/stacked/launcher.py", None, "\n#\n", TRAIN_STAGES),
}


@pytest.mark.slow  # DVC itself, in a committed repo copy
@pytest.mark.parametrize("kind", list(EDITS))
def test_dvc_status_marks_exactly_the_stages_an_edit_affects(committed_repo, tmp_path, kind):
    repo = tmp_path / "repo"
    shutil.copytree(committed_repo, repo, symlinks=True)
    *change, expected = EDITS[kind]
    edit(repo, *change)
    assert changed_stages(repo) == expected


@pytest.mark.slow  # DVC itself, in a committed repo copy
def test_a_group_choice_shows_in_params_diff_and_repro(committed_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(committed_repo, repo, symlinks=True)
    edit(repo, "params.yaml", "optimizer: adam", "optimizer: sgd")
    diff = run(dvc("params", "diff", "--json"), repo).stdout
    assert "defaults" in json.loads(diff)["params.yaml"]
    dry = run(dvc("repro", "--dry"), repo).stdout
    assert "Running stage 'train'" in dry and "Running stage 'download'" not in dry
