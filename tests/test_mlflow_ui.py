"""The MLflow UI, in a real browser: a tiny real sweep, a real `mlflow server` over its store, headless Chromium.

What a user sees must be what the store holds: every (initializer, seed) child run under the sweep's parent run
on the experiment page, with its test accuracy, the same `test/acc` values in the run-comparison view, and on a
run's page its logged model and its two datasets.

Run twice: over the default SQLite store, and against the tracking server on PostgreSQL that a cluster uses
(tests/services.py starts it with scripts/mlflow-server.sh).

Needs Debian's Chromium at /usr/bin/chromium and the `playwright` package (no browser download: Playwright
drives the system Chromium). Skipped without them, except on CI (CI=true), where it fails instead.
Screenshots go to the test's tmp_path; with INITSTUDY_UI_SCREENSHOT=/some/file.png the comparison view is
also saved there, downscaled for the README (how docs/mlflow-compare.png was made).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import python_module, run

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SWEEP = [(init, seed) for init in ("zeros", "he_uniform") for seed in (0, 1)]
SERVER_START_S = 60  # `mlflow server` answers /health after ~10 s
UI_TIMEOUT_MS = 20_000  # any one element of the UI
VIEWPORT = {"width": 1600, "height": 900}
README_WIDTH = 1000  # pixels of the README's screenshot


def require_browser():
    """The Playwright module, or a skip (a failure on CI) naming what is missing."""
    problems = []
    if not CHROMIUM.is_file():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        problems.append("the playwright package is missing (pip install -e '.[dev]')")
    if problems:
        message = "browser test: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- CI must run this test")
        pytest.skip(message)
    return sync_api


def js_number(value: float) -> str:
    """``String(value)`` in JavaScript, for the values an accuracy takes: the experiment table shows this."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def js_format_metric(value: float) -> str:
    """MLflow's ``Utils.formatMetric`` (what the comparison view shows): 3 decimals below 10, and so on."""
    if value == 0:
        return "0"
    if math.isnan(value):
        return "NaN"
    if abs(value) < 1e-3:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"  # JS: 1.234e-4
    digits = 3 if abs(value) < 10 else 2 if abs(value) < 100 else 1
    return js_number(math.floor(value * 10**digits + 0.5) / 10**digits)  # Math.round: half up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(repo: Path, log_path: Path, request: pytest.FixtureRequest) -> str:
    """`mlflow server` over repo/mlflow.db on a free local port; stopped (its whole process group) at teardown."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = log_path.open("w")
    # Its own process group: the server starts uvicorn and a job runner, which must go with it.
    server = subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )

    def stop():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=5)
        # Whatever is left of the group (the job runner's consumers are slow to go, the leader waits on them).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        log.close()

    request.addfinalizer(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"mlflow server gave no /health in {SERVER_START_S} s:\n{log_path.read_text()[-3000:]}")


def close_assistant(page, wait_ms: int | None = None) -> None:
    """Close the "MLflow Assistant" side panel if it is open (MLflow 3 opens it on a fresh profile; closed,
    it stays closed). With ``wait_ms``, give it that long to appear."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    try:
        if wait_ms:
            close.wait_for(state="visible", timeout=wait_ms)
        elif not close.is_visible():
            return
    except PlaywrightTimeout:  # no panel
        return
    close.click()
    close.wait_for(state="hidden")


def compare_view_row(page, metric: str, n_runs: int) -> list[str]:
    """The texts of ``metric``'s row in the comparison view's Metrics table, left to right.

    The table is two virtualized grids, names and values, that render only the rows in view; a row's cells
    have the same ``top`` in both. Their scrolling is synced with a lag, so scroll one at a time: the names
    grid until the metric is there, then the values grid to its ``top``, and read the cells there."""
    section = page.locator(".du-bois-light-collapse-item").filter(
        has=page.get_by_role("switch", name="Metrics - Show diff only")
    )
    section.scroll_into_view_if_needed()
    grids = section.get_by_role("grid")
    names, values = grids.nth(0), grids.nth(1)
    link = names.locator("a").filter(has_text=re.compile(rf"^{re.escape(metric)}$"))
    scroll_on = "(grid) => { const y = grid.scrollTop; grid.scrollTop = y + 90; if (grid.scrollTop === y) grid.scrollTop = 0; }"
    for _ in range(50):  # down, from the top again at the bottom
        if link.count():
            break
        names.evaluate(scroll_on)
        page.wait_for_timeout(100)
    else:
        raise AssertionError(f"no {metric!r} in the comparison view's Metrics table")
    top = link.first.evaluate("a => a.parentElement.style.top")
    read_row = """(grid, top) => {
        grid.scrollTop = Math.max(0, parseFloat(top) - 90);
        return [...grid.querySelectorAll('[role=rowgroup] > div')]
            .filter(cell => cell.style.top === top)
            .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left))
            .map(cell => cell.innerText.trim());
    }"""
    cells: list[str] = []
    for _ in range(50):
        cells = values.evaluate(read_row, top)
        if len(cells) == n_runs:
            names.evaluate(
                "(grid, y) => { grid.scrollTop = y; }", max(0.0, float(top.removesuffix("px")) - 90)
            )
            return cells
        page.wait_for_timeout(100)
    raise AssertionError(
        f"no row of {n_runs} values for {metric!r} in the comparison view (last read: {cells})"
    )


@pytest.mark.slow
@pytest.mark.log_model  # a child run's page shows its logged model
# The PostgreSQL case uses the session's MLflow server: on the worker of the other tests that start services
# (`make test`: --dist loadgroup), so that the server starts once, not once per worker.
@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.xdist_group("services"))]
)
def test_mlflow_ui_shows_every_child_run_and_compares_their_test_accuracy(
    store: str, synthetic_data_repo: Path, tmp_path: Path, request: pytest.FixtureRequest
):
    """``sqlite``: the default store, a server started over it afterwards (``make ui``); ``postgresql``: the
    sweep logs to the tracking server on PostgreSQL (scripts/mlflow-server.sh, ``make server``) directly."""
    sync_api = require_browser()
    repo = synthetic_data_repo
    if store == "sqlite":
        experiment_name, base = "initstudy", None
        run(python_module("initstudy.train", "--multirun"), repo, timeout=300)
        tracking_uri = f"sqlite:///{repo / 'mlflow.db'}"
    else:
        server = request.getfixturevalue("mlflow_server")
        experiment_name, base = "ui-postgresql", server.url
        sweep = ["--multirun", f"logger.experiment_name={experiment_name}"]
        run(python_module("initstudy.train", *sweep), repo, timeout=300, env={"MLFLOW_TRACKING_URI": base})
        tracking_uri = base

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    names = [f"{init}/seed_{seed}" for init, seed in SWEEP]
    assert len(parents) == 1 and sorted(children) == sorted(names)
    parent = parents[0]
    accuracy = {name: children[name].data.metrics["test/acc"] for name in names}

    if base is None:
        base = start_mlflow_server(repo, tmp_path / "mlflow-server.log", request)
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        context = browser.new_context(viewport=VIEWPORT)  # a fresh, temporary profile
        context.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        # Hermetic: the page may load from the local server only.
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        # Experiment page, "Model training" runs table (MLflow 3 opens new experiments on the GenAI overview).
        page.goto(
            f"{base}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning",
            wait_until="domcontentloaded",
        )
        name_cells = page.locator('[role=gridcell][col-id="attributes.`Run Name`"]')
        parent_cell = name_cells.filter(has_text=parent.info.run_name)
        expect(parent_cell).to_have_count(1)
        close_assistant(page, wait_ms=3000)  # its side panel narrows the table, pushing test/acc off-screen
        # Show the test/acc column (the table starts with attributes only).
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_placeholder("Search columns").fill("test/acc")
        page.locator(".du-bois-light-tree-treenode").filter(
            has=page.locator(".du-bois-light-tree-title", has_text="test/acc").filter(has_not_text="final/")
        ).locator(".du-bois-light-tree-checkbox").click()
        page.keyboard.press("Escape")
        # The children are nested under the sweep's parent run: expand it.
        for name in names:
            expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
        parent_cell.get_by_role("button").click()
        for name in names:
            run_id = children[name].info.run_id
            row = page.locator(f'[role=row][row-id="{run_id}"]')
            expect(row.get_by_role("link", name=name, exact=True)).to_be_visible()
            expect(row.locator('[col-id="metrics.`test/acc`"]')).to_have_text(js_number(accuracy[name]))
        page.screenshot(path=tmp_path / "experiment.png")

        # Comparison view of the 4 child runs.
        ids = [children[name].info.run_id for name in names]
        query = urllib.parse.urlencode(
            {
                "runs": json.dumps(ids),
                "experiments": json.dumps([experiment.experiment_id]),
                "workflowType": "machine_learning",
            }
        )
        page.goto(f"{base}/#/compare-runs?{query}", wait_until="domcontentloaded")
        expect(page.get_by_text(f"Comparing {len(ids)} Runs from 1 Experiment")).to_be_visible()
        close_assistant(page)
        run_id_row = (
            page.locator("tr").filter(has=page.get_by_text("Run ID:", exact=True)).locator(".data-value")
        )
        expect(run_id_row).to_have_count(len(ids))
        column_ids = [text.strip() for text in run_id_row.all_inner_texts()]
        assert sorted(column_ids) == sorted(ids)
        run_name_row = (
            page.locator("tr").filter(has=page.get_by_text("Run Name:", exact=True)).locator(".data-value")
        )
        id_to_name = {children[name].info.run_id: name for name in names}
        expect(run_name_row).to_have_text([id_to_name[run_id] for run_id in column_ids])
        # The parallel-coordinates plot: initializer against test accuracy (for the screenshot).
        page.get_by_role("button", name="Clear All").click()
        selects = page.locator(".du-bois-light-select")
        for select, choice in ((selects.nth(0), "init.name"), (selects.nth(1), "test/acc")):
            select.click()
            page.keyboard.type(choice)
            page.locator(f'.du-bois-light-select-item-option[title="{choice}"]').click()
            page.keyboard.press("Escape")
            expect(select.locator(".du-bois-light-select-selection-item-content")).to_have_text([choice])
        expect(page.locator(".js-plotly-plot")).to_contain_text("init.name")
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.screenshot(path=tmp_path / "compare.png")

        for metric in ("final/test/acc", "test/acc"):  # test/acc last: in view for the screenshot
            shown = compare_view_row(page, metric, len(ids))
            held = [children[id_to_name[run_id]].data.metrics[metric] for run_id in column_ids]
            expected = [js_format_metric(value) for value in held]
            assert shown == expected, f"comparison view shows {metric} {shown}, MLflow holds {held}"
        page.locator(".du-bois-light-collapse-item").filter(
            has=page.get_by_role("switch", name="Metrics - Show diff only")
        ).screenshot(path=tmp_path / "compare-metrics.png")

        # A child run's page: its mlflow.pytorch model and the two MNIST datasets it logged.
        child = children[names[-1]]
        (logged,) = child.outputs.model_outputs
        page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}",
                  wait_until="domcontentloaded")  # fmt: skip
        close_assistant(page)
        expect(page.get_by_role("heading", name="Logged models (1)")).to_be_visible()
        expect(page.locator(f'a[href*="{logged.model_id}"]').first).to_be_visible()
        # The Datasets box: the first with its digest, the other behind "+1".
        digests = {i.dataset.name: i.dataset.digest for i in child.inputs.dataset_inputs}
        assert set(digests) == {"mnist-training", "mnist-test"}
        shown = f"mnist-training ({digests['mnist-training']})"
        expect(page.get_by_role("button", name=shown)).to_be_visible()
        expect(page.get_by_text("+1", exact=True)).to_be_visible()
        page.screenshot(path=tmp_path / "run.png")
        assert not errors, f"JavaScript errors in the UI: {errors}"
        context.close()

    if destination := os.environ.get("INITSTUDY_UI_SCREENSHOT"):
        from PIL import Image

        with Image.open(tmp_path / "compare.png") as image:
            height = round(image.height * README_WIDTH / image.width)
            image.convert("RGB").resize((README_WIDTH, height), Image.LANCZOS).save(
                destination, optimize=True
            )
