"""``initstudy evaluate`` and ``initstudy predict`` on a tiny run trained here: the test pass reproduced bit for
bit (by folder, MLflow run id and registered model), probabilities that agree with the run's own predictions,
and the one-line refusals."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import python_module, run

# The module's tests share the trained run (conftest.trained), a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("evaluate")

RUN = "runs/he_uniform/seed_0"
TEST_IMAGES = "data/raw/MNIST/raw/t10k-images-idx3-ubyte"


def initstudy(repo: Path, *args: str, check: bool = True):
    """The user's command, through the dispatcher (``initstudy ...``)."""
    return run(python_module("initstudy", *args), repo, check=check)


def evaluated(repo: Path, reference: str) -> dict:
    return json.loads(initstudy(repo, "evaluate", reference).stdout)


def assert_reproduced(repo: Path, outcome: dict) -> None:
    metrics = json.loads((repo / RUN / "metrics.json").read_text())
    assert outcome["test/acc"] == metrics["test/acc"]  # the float itself, not approximately
    assert outcome["test/loss"] == metrics["test/loss"]
    assert outcome["predictions_equal"] and outcome["reproduced"]


@pytest.mark.slow
def test_evaluate_reproduces_the_recorded_test_pass(trained: Path) -> None:
    assert_reproduced(trained, evaluated(trained, RUN))


@pytest.mark.slow
def test_evaluate_repeats_a_test_pass_limited_to_its_first_batches(trained: Path, tmp_path: Path) -> None:
    """debug=tiny's kind of run (trainer.limit_test_batches): the same first batches again, not the whole set."""
    repo = tmp_path / "repo"
    shutil.copytree(trained, repo, symlinks=True)
    run(python_module("initstudy.train", "init=he_uniform", "seed=1", "trainer.max_epochs=1", "data.train_size=200",
                      "data.eval_batch_size=50", "trainer.limit_test_batches=2", "logger=offline"), repo)  # fmt: skip
    folder = repo / "runs/he_uniform/seed_1"
    assert np.load(folder / "test_predictions.npy").shape[-1] == 100  # [true, predicted] of 2 batches of 50
    outcome = evaluated(repo, "runs/he_uniform/seed_1")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert outcome["test/acc"] == metrics["test/acc"] and outcome["test/loss"] == metrics["test/loss"]
    assert outcome["predictions_equal"] and outcome["reproduced"]


@pytest.mark.slow
def test_evaluate_finds_the_run_by_mlflow_run_id_and_registered_model(trained: Path) -> None:
    import mlflow

    run_id = json.loads((trained / RUN / "provenance.json").read_text())["mlflow_run_id"]
    assert_reproduced(trained, evaluated(trained, run_id))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{trained / 'mlflow.db'}")
    client.create_registered_model("initstudy-he_uniform")
    version = client.create_model_version("initstudy-he_uniform", f"runs:/{run_id}/run", run_id=run_id)
    assert_reproduced(trained, evaluated(trained, f"models:/initstudy-he_uniform/{version.version}"))


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(row[f"p{k}"]) for k in range(10)] for row in rows])


@pytest.mark.slow
def test_predict_agrees_with_the_runs_test_predictions(trained: Path, tmp_path: Path) -> None:
    from PIL import Image

    recorded = np.load(trained / RUN / "test_predictions.npy")
    rows = csv_rows(initstudy(trained, "predict", RUN, TEST_IMAGES).stdout)
    probs = probabilities(rows)
    assert probs.shape == (recorded.shape[1], 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == recorded[1]).all()
    assert [int(row["predicted"]) for row in rows] == recorded[1].tolist()

    pixels = np.frombuffer((trained / TEST_IMAGES).read_bytes()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    pngs = []
    for index in range(3):
        pngs.append(tmp_path / f"digit{index}.png")
        Image.fromarray(pixels[index], mode="L").save(pngs[-1])
    rows = csv_rows(initstudy(trained, "predict", RUN, *map(str, pngs)).stdout)
    assert [row["image"] for row in rows] == list(map(str, pngs))
    np.testing.assert_allclose(probabilities(rows).sum(axis=1), 1.0, atol=1e-5)
    assert probabilities(rows).argmax(axis=1).tolist() == recorded[1][:3].tolist()


def damaged_copy(repo: Path, damage: str) -> str:
    """A copy of the run folder with one thing wrong; returns its path relative to the repo."""
    copy = repo / "runs_damaged" / damage
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(repo / RUN, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    if damage == "incomplete":
        (copy / "weights_final.pt").unlink()
    elif damage == "architecture":
        config["model"]["hidden_sizes"] = [32]
    elif damage == "data":
        config["download"]["sha256"]["t10k-images-idx3-ubyte"] = "0" * 64
    elif damage == "profile":
        numerics = json.loads((copy / "numerics.json").read_text())
        numerics["flush_denormal"] = "none"  # a run whose arithmetic this profile does not give
        (copy / "numerics.json").write_text(json.dumps(numerics))
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return str(copy.relative_to(repo))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("incomplete", "weights_final.pt"),
        ("architecture", "weights and config differ"),
        ("data", "not the run's data"),
        ("profile", "flush_denormal"),
    ],
)
def test_a_run_that_cannot_reproduce_is_refused_in_one_line(trained: Path, damage: str, says: str) -> None:
    folder = damaged_copy(trained, damage)
    for command in (("evaluate", folder), ("predict", folder, TEST_IMAGES)):
        if damage == "data" and command[0] == "predict":
            continue  # predict reads the user's images, not the run's test files
        result = initstudy(trained, *command, check=False)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], result.stderr
        assert result.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("evaluate", "no-such-run"), "neither a run folder"),
        (("evaluate", "0123456789abcdef0123456789abcdef"), "not in the store"),
        (("evaluate", "models:/no-such-model/1"), "not in the registry"),
        (("predict", RUN, "missing.png"), "does not exist"),
        (("predict", RUN, "params.yaml"), "not an IDX file"),
    ],
)
def test_bad_references_and_images_are_refused_in_one_line(trained: Path, args: tuple, says: str) -> None:
    result = initstudy(trained, *args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


@pytest.mark.slow
def test_predict_refuses_an_image_of_another_size(trained: Path, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (32, 32)).save(tmp_path / "big.png")
    result = initstudy(trained, "predict", RUN, str(tmp_path / "big.png"), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'big.png'} is a 32x32 L image; predict takes 28x28 grayscale (mode L)"
    ]
