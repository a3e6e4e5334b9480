"""``make clean`` deletes what the project wrote and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from initstudy.runs import clean, rundir


def make_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / rundir.STAMP).write_text("{}")
    for name in ("metrics.json", "history.csv", "config.yaml"):
        (folder / name).write_text("x")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("x")


def test_clean_deletes_run_folders_and_keeps_foreign_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / rundir.SWEEP_STAMP).write_text("{}")
    (runs / rundir.MANIFEST).write_text("init,seed,run_dir\n")
    make_run(runs / "zeros" / "seed_0")
    make_run(runs / "lr=0.1" / "he_uniform" / "seed_1")
    make_run(runs / "he_uniform" / "seed_0")
    (runs / "he_uniform" / "seed_0" / "notes.txt").write_text("mine")  # a user's file inside a run folder
    (runs / "mine").mkdir()
    (runs / "mine" / "data.csv").write_text("mine")
    clean.main(["runs", "runs_depth"])
    left = sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*"))
    assert left == ["he_uniform", "he_uniform/seed_0", "he_uniform/seed_0/notes.txt", "mine", "mine/data.csv"]
    assert (runs / "mine" / "data.csv").read_text() == "mine"
    out = capsys.readouterr().out
    assert "kept (not written by initstudy): runs/he_uniform/seed_0/notes.txt" in out


def test_clean_of_a_finished_sweep_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / rundir.SWEEP_STAMP).write_text("{}")
    make_run(runs / "zeros" / "seed_0")
    clean.main(["runs"])
    assert not runs.exists()
    assert "kept" not in capsys.readouterr().out  # its own lock file went with it: nothing foreign was kept


def test_clean_refuses_a_project_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    with pytest.raises(rundir.RunFolderError):
        clean.main(["src"])
    assert (tmp_path / "src").is_dir()


def test_make_clean_covers_every_experiment_presets_sweep_folder():
    from initstudy.runs.clean import default_roots

    assert default_roots() == ["runs", "runs_depth", "runs_epsilon", "runs_glorot2010", "runs_he2015",
                               "runs_lr_grid", "runs_notebook", "runs_saxe2014", "runs_schoenholz2017",
                               "runs_tuned", "runs_width"]  # fmt: skip
