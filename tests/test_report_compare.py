"""The report's full-resolution comparison, floors table and floor lines, on a real MLflow store.

A search is recorded by hand in a SQLite store the way the driver records one (a parent run with
``floor.*`` metrics and ``floors/*.png`` artifacts, nested trial runs with metric histories) and
two registered pyfunc models: the champion (made from the best trial) reproduces the target
except in one known square, the runner-up is worse everywhere. The page is then opened in
headless Chromium (tests/test_browser.py's flags) and the wipe is moved.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from platform.report import build_report, compare

REPO = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("PLATFORM_TEST_OUTPUT", REPO / "test-output")) / "browser"
H, W = 360, 480
DEFECT = (200, 300)  # (y, x) of the champion's 64-pixel defect


def frames():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    x = np.stack([yy, xx, 0.5 + 0.3 * np.sin(8 * xx)], -1) * 0.8 + 0.1 * rng.random((H, W, 3))
    x = np.clip(x, 0, 1).astype(np.float32)
    return x, np.clip(x ** 0.7, 0, 1).astype(np.float32)


class Gamma(mlflow.pyfunc.PythonModel):
    """target = input ** 0.7; ``defect`` zeroes a 64-pixel square, ``blend`` mixes in the input."""

    def __init__(self, defect: bool, blend: float):
        self.defect, self.blend = defect, blend

    def predict(self, context, model_input, params=None):
        y = np.clip(np.asarray(model_input), 0, 1) ** 0.7
        y = (1 - self.blend) * y + self.blend * np.asarray(model_input)
        if self.defect:
            y[:, DEFECT[0]:DEFECT[0] + 64, DEFECT[1]:DEFECT[1] + 64] = 0.0
        return y


def _png(tmp: Path, name: str, img: np.ndarray) -> Path:
    path = tmp / "floors" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(path)
    return path


def record_search(tmp: Path, floors: bool = True) -> str:
    """A finished search named ``shot`` (parent + 2 trials, 2 registered versions); the parent id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.create_experiment("shot", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="shot-1", tags={"tune_experiment_path": str(tmp / "ray")})
    pid = parent.info.run_id
    client.log_param(pid, "metric", "val_psnr")
    client.log_param(pid, "mode", "max")
    x, y = frames()
    if floors:
        for name, value in {"identity": 14.0, "lut3d": 21.5}.items():
            client.log_metric(pid, f"floor.{name}.val_psnr", value)
            client.log_metric(pid, f"floor.{name}.val_ssim", value / 30)
        for name, img in {"input": x, "target": y, "identity": x, "lut3d": np.clip(x ** 0.75, 0, 1)}.items():
            client.log_artifact(pid, str(_png(tmp, name, img)), "floors")
    runs = []
    for i, curve in enumerate(([16.0, 20.0, 24.0], [15.0, 17.0])):
        run = client.create_run(exp, run_name=f"trial-{i}", tags={"mlflow.parentRunId": pid, "trial_id": f"t{i}",
                                                                  "stop_reason": "completed"})
        for step, v in enumerate(curve, 1):
            client.log_metric(run.info.run_id, "val_psnr", v, step=step)
        client.log_param(run.info.run_id, "optimizer.lr", 10.0 ** -(3 + i))
        client.set_terminated(run.info.run_id)
        runs.append(run.info.run_id)
    client.set_terminated(pid)
    client.create_registered_model("shot")
    for rid, model, score in ((runs[1], Gamma(False, 0.5), 17.0), (runs[0], Gamma(True, 0.0), 24.0)):
        with mlflow.start_run(run_id=rid):
            info = mlflow.pyfunc.log_model(name="model", python_model=model)
        v = client.create_model_version("shot", info.model_uri, run_id=rid, model_id=info.model_id)
        client.set_model_version_tag("shot", v.version, "promotion.score", str(score))
    client.set_registered_model_alias("shot", "champion", "2")
    return pid


@pytest.fixture
def store(tmp_cwd, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_cwd}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_cwd}/mlflow.db")
    return tmp_cwd


def test_worst_regions_find_the_defect_and_do_not_overlap():
    _x, y = frames()
    pred = y.copy()
    pred[DEFECT[0]:DEFECT[0] + 64, DEFECT[1]:DEFECT[1] + 64] = 0
    pred[10:40, 10:40] += 0.05  # a smaller, fainter error elsewhere
    boxes = compare.worst_regions(pred, y, size=96, k=3)
    (y0, x0, s), rest = boxes[0], boxes[1:]
    assert s == 96 and y0 <= DEFECT[0] and DEFECT[0] + 64 <= y0 + s and x0 <= DEFECT[1] and DEFECT[1] + 64 <= x0 + s
    for by, bx, _ in rest:
        assert abs(by - y0) >= s or abs(bx - x0) >= s
    assert all(0 <= by <= H - s and 0 <= bx <= W - s for by, bx, _ in boxes)
    assert compare.worst_regions(y, y) == []  # nothing differs: no crop


def test_report_compares_the_champion_with_target_floors_and_runner_up(store):
    from mlflow.tracking import MlflowClient

    from platform.report.data import load_search

    record_search(store)
    data = load_search(MlflowClient(), "shot")
    assert data.floors() == {"identity": {"val_psnr": 14.0, "val_ssim": pytest.approx(14 / 30)},
                             "lut3d": {"val_psnr": 21.5, "val_ssim": pytest.approx(21.5 / 30)}}
    cmp = compare.build(MlflowClient(), data)
    assert list(cmp.layers) == ["input", "champion (v2)", "target", "runner-up (v1)", "floor: identity",
                                "floor: lut3d"]
    assert all(img.shape == (H, W, 3) for img in cmp.layers.values())
    y0, x0, s = cmp.boxes[0]
    assert y0 <= DEFECT[0] < DEFECT[0] + 64 <= y0 + s and x0 <= DEFECT[1] < DEFECT[1] + 64 <= x0 + s


def test_report_without_floors_says_so_and_draws_no_floor(store):
    from mlflow.tracking import MlflowClient

    record_search(store, floors=False)
    path = build_report("shot", client=MlflowClient(), out=store / "r.html")
    page = path.read_text()
    assert "nothing to compare here" in page and "Floors:" not in page and "<div class=\"wipe\"" not in page


def test_report_page_in_chromium_wipe_crops_floors_and_size(store):
    from mlflow.tracking import MlflowClient

    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no /usr/bin/chromium: `apt-get install chromium` (.ci/run does it as root)")
    from playwright.sync_api import sync_playwright

    record_search(store)
    OUT.mkdir(parents=True, exist_ok=True)
    path = build_report("shot", client=MlflowClient(), out=OUT / "report_compare.html")
    assert path.stat().st_size < compare.REPORT_LIMIT_BYTES
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append(f"network: {r.url}") if not r.url.startswith(("file:", "data:"))
                else None)
        page.goto(path.as_uri(), wait_until="load")
        images = page.evaluate("() => [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        assert images and all(ok for _, ok in images), images
        # Crops are 1:1 pixels of the full-resolution frame: natural size = the crop size.
        sizes = page.evaluate("() => [...document.querySelectorAll('img.crop')].map(i => i.naturalWidth)")
        regions = page.locator("div.crops").count()
        assert 1 <= regions <= compare.MAX_CROPS and len(sizes) == 6 * regions and set(sizes) == {192}
        # The floors table and the floor lines' legend text are there.
        assert page.locator("h2", has_text="Floors").count() == 1
        assert page.locator("table", has_text="floor: lut3d").count() == 1
        # The wipe: champion over target, clipped at the slider; moving it moves the clip.
        left = page.locator("img.layer.left")
        assert left.get_attribute("data-name") == "champion (v2)"
        assert page.locator("img.layer.right").get_attribute("data-name") == "target"
        assert "inset(0px 50% 0px 0px)" in left.evaluate("e => getComputedStyle(e).clipPath")
        page.locator("[data-pos]").fill("20")
        assert "inset(0px 80% 0px 0px)" in left.evaluate("e => getComputedStyle(e).clipPath")
        page.locator("[data-right]").select_option("floor: lut3d")
        assert page.locator("img.layer.right").get_attribute("data-name") == "floor: lut3d"
        page.screenshot(path=str(OUT / "report_compare.png"), full_page=True)
        browser.close()
    assert errors == []

