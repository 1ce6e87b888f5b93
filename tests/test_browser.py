"""The pages users watch, opened in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright's Python package; no browser is ever downloaded): the Ray dashboard's jobs page while
a search runs as a Ray job, then the HTML report and the MLflow UI of that search.

Screenshots are saved under ``test-output/browser/`` (``PLATFORM_TEST_OUTPUT`` to change it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netutil import free_ports
from tests.netutil import stop_group, wait_for

REPO = Path(__file__).resolve().parent.parent
ENGINE_SPACE = str(Path(__file__).resolve().parent / "data" / "engine_quick.yaml")  # fast, fixed, no floors
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
OUT = Path(os.environ.get("PLATFORM_TEST_OUTPUT", REPO / "test-output")) / "browser"
EXPERIMENT = "browser_quick"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no /usr/bin/chromium: `apt-get install chromium` "
                                                            "(.ci/run does it as root)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, url: str, **context):
    """A new page at ``url`` that records console errors and failed requests in ``page.errors``."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, **context)
    page = ctx.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url, wait_until="load", timeout=120_000)
    return page


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head with its dashboard on 127.0.0.1 and token authentication, as clusters/ start it."""
    state = Path(tmp_path_factory.mktemp("rayb"))
    token = os.urandom(32).hex()
    gcs, dash, client, agent = free_ports(4)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": str(REPO),
           "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    tmp = Path("/tmp") / f"rb-{os.getpid()}"
    cmd = [str(REPO / ".venv" / "bin" / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", "--num-cpus=4", f"--temp-dir={tmp}", "--disable-usage-stats"]
    with open(state / "head.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_for(lambda: _api_up(url, token), 180, "the Ray dashboard")
        yield {"url": url, "token": token, "env": env, "state": state}
    finally:
        stop_group(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _api_up(url: str, token: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=5).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def search_job(ray_head, browser):
    """A quick search submitted as a Ray job; the dashboard's jobs page is checked while it runs."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    store = ray_head["state"]
    client = JobSubmissionClient(ray_head["url"], headers={"Authorization": f"Bearer {ray_head['token']}"})
    env_vars = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "MLFLOW_ARTIFACT_ROOT": str(store / "artifacts"),
                "PLATFORM_STORAGE_PATH": str(store / "ray_results"), "PLATFORM_TENSORBOARD_DIR": str(store / "tb"),
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    job = client.submit_job(entrypoint=f"python -m platform.search {ENGINE_SPACE} --quick --experiment {EXPERIMENT}",
                            runtime_env={"env_vars": env_vars})
    wait_for(lambda: client.get_job_status(job) == JobStatus.RUNNING, 300, "the search job to run")
    jobs_page = check_jobs_page(browser, ray_head, job)
    status = wait_for(lambda: (s := client.get_job_status(job)).is_terminal() and s, 1500, "the search job to end")
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)[-4000:]
    return {"store": store, "uri": env_vars["MLFLOW_TRACKING_URI"], "jobs_page": jobs_page}


def check_jobs_page(browser, ray_head, job: str) -> str:
    host = ray_head["url"].split("//")[1].split(":")[0]
    page = open_page(browser, "about:blank")
    page.context.add_cookies([{"name": "ray-authentication-token", "value": ray_head["token"], "domain": host,
                               "path": "/"}])
    page.goto(f"{ray_head['url']}/#/jobs", wait_until="load")
    page.get_by_text(job).first.wait_for(timeout=120_000)
    row = page.locator("tr", has_text=job).first
    text = row.inner_text()
    page.screenshot(path=str(OUT / "ray_dashboard_jobs.png"), full_page=True)
    page.context.close()
    return text


def test_ray_dashboard_jobs_page_shows_the_running_search(search_job):
    text = search_job["jobs_page"]
    assert "RUNNING" in text and "platform.search " + ENGINE_SPACE in text, text


@pytest.fixture(scope="module")
def mlflow_ui(search_job):
    """``mlflow server`` (the UI) over the search's store, on 127.0.0.1."""
    import requests

    [port] = free_ports(1, "127.0.0.1")
    cmd = [str(REPO / ".venv" / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", search_job["uri"]]
    log = open(search_job["store"] / "mlflow-ui.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, (search_job["store"] / "mlflow-ui.log").read_text()[-3000:]
        try:
            return requests.get(f"{url}/health", timeout=5).ok
        except requests.RequestException:
            return False

    try:
        wait_for(up, 180, "the MLflow UI")
        yield url
    finally:
        stop_group(proc)


def _search_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, exp, parent, children


def test_mlflow_ui_shows_the_search_its_trials_and_the_champion(mlflow_ui, search_job, browser):
    import re

    _client, exp, parent, children = _search_runs(mlflow_ui)
    assert len(children) == 4
    page = open_page(browser, f"{mlflow_ui}/#/experiments/{exp.experiment_id}/runs")
    page.get_by_text(parent.info.run_name).first.wait_for(timeout=120_000)
    page.get_by_text("5 matching runs").wait_for(timeout=60_000)  # the parent and its 4 trials
    page.locator("[role=row]", has_text=parent.info.run_name).get_by_role("button").first.click()
    for child in children:
        page.get_by_text(child.info.run_name, exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(OUT / "mlflow_runs.png"), full_page=True)
    page.goto(f"{mlflow_ui}/#/models/{EXPERIMENT}", wait_until="load")
    row = page.locator("[role=row], tr", has_text="Version 1").first
    row.get_by_text(re.compile(r"^\W*champion$")).first.wait_for(timeout=60_000)
    page.screenshot(path=str(OUT / "mlflow_model.png"), full_page=True)
    page.context.close()


def test_html_report_opens_with_every_image_and_section(search_job, browser, monkeypatch):
    from platform.report import build_report

    monkeypatch.setenv("MLFLOW_TRACKING_URI", search_job["uri"])
    path = build_report(EXPERIMENT, out=OUT / "report.html")
    page = open_page(browser, path.as_uri())
    headings = page.locator("h2").all_inner_texts()
    for section in ("Optimisation", "Learning curves", "Parameters", "Best trials", "Spend", "All trials"):
        assert any(h.startswith(section) for h in headings), (section, headings)
    images = page.evaluate("() => [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])")
    assert len(images) >= 4 and all(ok for _, ok in images), images
    assert page.locator("table tbody tr").count() >= 4
    page.screenshot(path=str(OUT / "report.png"), full_page=True)
    assert page.errors == []
    page.context.close()
