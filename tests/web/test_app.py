"""The web app at `/` in real headless Chromium against a real `drtrain up`.

Tests run in file order and share one server: the jobs of ``seeded`` train while the first
tests run. Each test's page fails it on a request to another origin or a console error
(see conftest.py).
"""
from __future__ import annotations

import hashlib
import io
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Page, Route, expect

from drtrain.jobs.lifecycle import MetricValue
from tests.web.server import ARTIFACTS, SWEEP_GRID, TINY, Server

if TYPE_CHECKING:
    from tests.web.conftest import Recorder, Seeded

TOTAL_POINTS = """(sel) => [...document.querySelectorAll(sel)]
    .reduce((n, f) => n + Number(f.dataset.points || 0), 0)"""


def open_app(page: Page, server: Server, route: str = "#/jobs") -> None:
    page.goto(f"{server.url}/{route}")


def checkpoints(server: Server, job_id: str) -> list[dict[str, Any]]:
    with server.client() as c:
        body = c.get(f"/v1/jobs/{job_id}/checkpoints").json()
    return body["items"] if isinstance(body, dict) else body


def points(page: Page, testid: str) -> int:
    return int(page.get_attribute(f'[data-testid="{testid}"]', "data-points") or 0)


def metric_points(server: Server, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    since = 0
    with server.client() as c:
        while True:
            page = c.get(f"/v1/jobs/{job_id}/metrics", params={"since": since}).json()
            if not page["items"]:
                return items
            items += page["items"]
            since = page["next_since"]


def legend_at_last_epoch(page: Page, testid: str) -> dict[str, str]:
    """A chart's legend, series label -> value shown, with the cursor over its last epoch."""
    over = page.locator(f'[data-testid="{testid}"] .u-over')
    over.scroll_into_view_if_needed()  # the mouse only reaches what is in the viewport
    box = over.bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2)
    rows = page.locator(f'[data-testid="{testid}"] .u-legend .u-series')
    expect(rows.first.locator(".u-value")).to_have_text(re.compile(r"\S"))  # the epoch under the cursor
    return dict(zip(rows.locator(".u-label").all_inner_texts(), rows.locator(".u-value").all_inner_texts(),
                    strict=True))


def legend_marker(page: Page, testid: str, label: str) -> dict[str, str]:
    """How the legend marks one series: its border style (solid, dashed) and colour."""
    marker = (page.locator(f'[data-testid="{testid}"] .u-legend .u-series')
              .filter(has=page.locator(".u-label", has_text=re.compile(f"^{re.escape(label)}$")))
              .locator(".u-marker"))
    return marker.evaluate("m => ({style: getComputedStyle(m).borderTopStyle,"
                           " colour: getComputedStyle(m).borderTopColor})")


# ----------------------------------------------------------------------------- sign in

def test_sign_in_wrong_key_is_explained_then_right_key_works(anon_page: Page, server: Server,
                                                             recorder: Recorder,
                                                             seeded: Seeded) -> None:
    # (``seeded`` only starts the shared jobs early: they train while this test runs)
    recorder.allow(r"status of 401")  # Chromium logs the refused request itself
    page = anon_page
    open_app(page, server, "")
    page.fill("#api-key", "drt_not-a-real-key")
    page.click("button:has-text('Sign in')")
    error = page.locator("#signin-error")
    expect(error).to_contain_text("did not accept this API key")
    expect(error).to_contain_text("401")
    assert page.evaluate("sessionStorage.getItem('drtrain-key')") is None

    page.fill("#api-key", server.key)
    page.click("button:has-text('Sign in')")
    expect(page.locator("#jobs-table")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('drtrain-key')") == server.key
    page.reload()  # the key lives in this tab's session storage: still signed in
    expect(page.locator("#jobs-table")).to_be_visible()
    page.click("text=Sign out")
    expect(page.locator("#api-key")).to_be_visible()


# ----------------------------------------------------------------------------- a running job

def test_running_job_is_listed_and_its_charts_gain_points(page: Page, server: Server,
                                                           seeded: Seeded) -> None:
    job_id = seeded.long["id"]
    server.wait(job_id, {"running"}, timeout=60)
    open_app(page, server)
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "running", timeout=10_000)
    expect(row).to_contain_text("pre hellinger λ0.5")  # DR settings in short
    row.locator("a.job-link").click()
    expect(page).to_have_url(re.compile(f"#/jobs/{job_id}$"))

    chart = '[data-testid="chart-pretrain-recon_error"]'
    page.wait_for_function(f"document.querySelector('{chart}')?.dataset.points > 0")
    for name in ("dr", "cross_group_divergence", "free_energy_gap"):
        expect(page.locator(f'[data-testid="chart-pretrain-{name}"]')).to_be_visible()
    before = page.evaluate(TOTAL_POINTS, "figure.chart")
    page.wait_for_function(f"({TOTAL_POINTS})('figure.chart') >= {before + 10}", timeout=15_000)
    # uPlot drew into a canvas
    assert page.locator(f"{chart} canvas").count() >= 1


def test_cancel_from_the_job_page(page: Page, server: Server, seeded: Seeded) -> None:
    job_id = seeded.long["id"]
    job = server.wait(job_id, {"running", "cancelled", "failed", "succeeded"}, timeout=60)
    assert job["status"] == "running", job
    open_app(page, server, f"#/jobs/{job_id}")

    def reply_late(route: Route) -> None:
        # The cancel's reply (status "cancelling") arrives after the job has stopped and the
        # event stream has said "cancelled": the page must not go back to "cancelling".
        reply = route.fetch()
        server.wait(job_id, {"cancelled"}, timeout=30)
        time.sleep(1.0)  # the event stream's poll brings "cancelled" meanwhile
        route.fulfill(response=reply)

    page.route(f"**/v1/jobs/{job_id}/cancel", reply_late)
    page.click("#cancel-job")
    page.click("#cancel-job-yes")  # cancel asks first
    expect(page.locator("#job-notice")).to_contain_text("ancel", timeout=40_000)
    badge = page.locator(".page-head .badge")
    expect(badge).to_have_text("cancelled", timeout=30_000)  # the event stream brings it
    assert server.job(job_id)["status"] == "cancelled"
    # the notice follows the job: no "Cancel requested" left over once it has stopped
    expect(page.locator("#job-notice")).to_have_text("Cancelled.")
    expect(page.locator("#cancel-job")).to_have_count(0)


# ----------------------------------------------------------------------------- finished jobs

def test_finished_job_page_shows_every_chart_the_spec_and_final_metrics(
        page: Page, server: Server, seeded: Seeded) -> None:
    job = server.wait(seeded.dr["id"])
    assert job["status"] == "succeeded", job
    open_app(page, server, f"#/jobs/{job['id']}")
    epochs = job["spec"]["finetune"]["epochs"]
    # layer0 and the head, plus the DR term's layer0 where the worker records it apart
    dr_grads = {p["name"] for p in metric_points(server, job["id"]) if p["name"].startswith("grad_norm_dr.")}
    for testid, series in [("chart-finetune-loss", 2), ("chart-finetune-accuracy", 2),
                           ("chart-finetune-grad_norm", 2 + len(dr_grads)), ("chart-finetune-dr", 1),
                           ("chart-pretrain-recon_error", 1)]:
        fig = page.locator(f'[data-testid="{testid}"]')
        expect(fig).to_have_attribute("data-series", str(series))
        page.wait_for_function(
            f"document.querySelector('[data-testid=\"{testid}\"]')?.dataset.points > 0")
    assert points(page, "chart-finetune-loss") == 2 * epochs
    # gradient norms: layer0 and the head, on a log scale
    expect(page.locator('[data-testid="chart-finetune-grad_norm"] figcaption')).to_contain_text("log")
    expect(page.locator("#final-metrics")).to_contain_text("val_accuracy")
    expect(page.locator("#job-spec")).to_contain_text('"dataset_id": "builtin:digits"')
    expect(page.locator(".summary")).to_contain_text("1 of")  # attempt 1 of N
    page.screenshot(path=str(ARTIFACTS / "job-page.png"), full_page=True)


def test_a_job_without_dr_draws_no_flat_dr_chart(page: Page, server: Server,
                                                 seeded: Seeded) -> None:
    job = server.wait(seeded.plain["id"])
    assert job["status"] == "succeeded", job
    # a phase without DR has no DR value to record
    assert not [p for p in metric_points(server, job["id"]) if p["name"] == "dr"]
    open_app(page, server, f"#/jobs/{job['id']}")
    expect(page.locator('[data-testid="chart-finetune-loss"]')).to_be_visible()
    # without DR, how far apart the groups' posteriors are is still worth seeing
    expect(page.locator('[data-testid="chart-pretrain-cross_group_divergence"]')).to_be_visible()
    for testid in ("chart-finetune-dr", "chart-pretrain-dr"):
        expect(page.locator(f'[data-testid="{testid}"]')).to_have_count(0)


# What the worker records about DR, seeded so the test does not depend on the installed
# worker recording it: cross-group pairs per pretraining batch per layer (layer 1 nearly
# starved at the end) and the DR term's own gradient norm per hidden layer while fine-tuning.
PAIRS_PER_BATCH = {0: [41.5, 40.25], 1: [12.5, 0.75]}
DR_GRAD_NORMS = {0: [0.031, 0.027, 0.0225], 1: [0.0125, 0.011, 0.0095]}


def epochs_of(points: list[dict[str, Any]], phase: str, name: str) -> list[int]:
    return sorted({p["epoch"] for p in points if p["phase"] == phase and p["name"] == name})


def dr_diagnostics(points: list[dict[str, Any]]) -> list[MetricValue]:
    """The seeded values on the epochs the job trained (however the worker numbers them)."""
    pretrain = epochs_of(points, "pretrain", "recon_error")
    finetune = epochs_of(points, "finetune", "train_loss")
    assert len(pretrain) == 2 and len(finetune) == 3, (pretrain, finetune)
    pairs = [MetricValue("pretrain", layer, epoch, "dr_pairs_per_batch", value)
             for layer, values in PAIRS_PER_BATCH.items() for epoch, value in zip(pretrain, values)]
    grads = [MetricValue("finetune", None, epoch, f"grad_norm_dr.layer{layer}", value)
             for layer, values in DR_GRAD_NORMS.items() for epoch, value in zip(finetune, values)]
    return pairs + grads


@pytest.fixture(scope="module")
def diagnosed(server: Server, seeded: Seeded) -> dict[str, Any]:
    """The two-layer DR job, finished, with the DR diagnostics in its metrics."""
    job = server.wait(seeded.diagnosed["id"])
    assert job["status"] == "succeeded", job
    server.put_metrics(job["id"], dr_diagnostics(metric_points(server, job["id"])))
    return job


def test_job_page_draws_the_dr_gradient_norms_and_pairs_per_batch(page: Page, server: Server,
                                                                  diagnosed: dict[str, Any]) -> None:
    open_app(page, server, f"#/jobs/{diagnosed['id']}")
    grads = "chart-finetune-grad_norm"
    # classification loss per hidden layer and the head, then the DR term per hidden layer
    expect(page.locator(f'[data-testid="{grads}"]')).to_have_attribute("data-series", "5")
    expect(page.locator(f'[data-testid="{grads}"]')).to_have_attribute("data-points", str(5 * 3))
    caption = page.locator(f'[data-testid="{grads}"] figcaption')
    expect(caption).to_contain_text("classification loss solid, DR term dashed")
    legend = legend_at_last_epoch(page, grads)
    assert list(legend)[1:] == ["layer0", "layer1", "head", "DR layer0", "DR layer1"], legend
    assert legend["DR layer0"] == "0.0225" and legend["DR layer1"] == "0.0095", legend
    classification, dr = legend_marker(page, grads, "layer0"), legend_marker(page, grads, "DR layer0")
    assert classification["style"] == "solid" and dr["style"] == "dashed"
    assert classification["colour"] == dr["colour"]  # one colour per layer, whichever loss

    pairs = "chart-pretrain-dr_pairs_per_batch"
    expect(page.locator(f'[data-testid="{pairs}"] figcaption')).to_contain_text("pairs per mini-batch")
    expect(page.locator(f'[data-testid="{pairs}"]')).to_have_attribute("data-points", str(2 * 2))
    legend = legend_at_last_epoch(page, pairs)
    assert legend["layer 0"] == "40.25" and legend["layer 1"] == "0.75", legend


def test_download_model_from_the_job_page(page: Page, server: Server, seeded: Seeded,
                                          tmp_path: Path) -> None:
    job = server.wait(seeded.dr["id"])
    open_app(page, server, f"#/jobs/{job['id']}")
    with page.expect_download() as info:
        page.click("#download-model")
    path = tmp_path / "model.safetensors"
    info.value.save_as(path)
    final = [ck for ck in checkpoints(server, job["id"]) if ck["kind"] == "final"]
    assert len(final) == 1
    assert hashlib.sha256(path.read_bytes()).hexdigest() == final[0]["sha256"]
    assert info.value.suggested_filename.endswith(".safetensors")
    expect(page.locator("#job-notice")).to_contain_text("Downloaded the model")


def test_download_checkpoint_from_the_job_page(page: Page, server: Server, seeded: Seeded,
                                               tmp_path: Path) -> None:
    job = server.wait(seeded.dr["id"])
    cks = checkpoints(server, job["id"])
    open_app(page, server, f"#/jobs/{job['id']}")
    rows = page.locator("#checkpoints tbody tr")
    expect(rows).to_have_count(len(cks))
    with page.expect_download() as info:
        rows.nth(0).locator("button:has-text('Download')").click()
    path = tmp_path / "checkpoint.safetensors"
    info.value.save_as(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == cks[0]["sha256"]


def test_resubmit_opens_the_form_prefilled(page: Page, server: Server, seeded: Seeded) -> None:
    job = seeded.dr
    open_app(page, server, f"#/jobs/{job['id']}")
    page.click("#resubmit")
    expect(page).to_have_url(re.compile(rf"#/submit\?from={job['id']}$"))
    expect(page.locator('input[name="finetune.epochs"]')).to_have_value(
        str(job["spec"]["finetune"]["epochs"]))
    expect(page.locator('input[name="pretrain.dr.weight"]')).to_have_value("0.5")
    expect(page.locator('input[name="model.hidden_layers"]')).to_have_value("32")


# ----------------------------------------------------------------------------- list, compare, sweep

def test_jobs_list_filters_and_sorts(page: Page, server: Server, seeded: Seeded) -> None:
    server.wait(seeded.dr["id"])
    server.wait(seeded.plain["id"])
    open_app(page, server, "#/jobs?status=succeeded")
    rows = page.locator("#jobs-table tbody tr")
    expect(rows.first).to_be_visible()
    statuses = set(rows.evaluate_all("rs => rs.map(r => r.dataset.status)"))
    assert statuses == {"succeeded"}, statuses
    expect(page.locator(f'tr[data-job-id="{seeded.long["id"]}"]')).to_have_count(0)

    page.select_option('select[aria-label="Status filter"]', "")
    expect(page.locator(f'tr[data-job-id="{seeded.long["id"]}"]')).to_have_count(1)
    page.fill('input[aria-label="Search"]', seeded.plain["id"][:12])
    expect(rows).to_have_count(1)
    page.fill('input[aria-label="Search"]', "")

    page.click("th:has-text('Accuracy')")
    accs = [float(t.rstrip("%")) for t in rows.locator("td:nth-child(7)").all_inner_texts() if t]
    assert accs and accs == sorted(accs, reverse=True), accs


def test_compare_two_jobs(page: Page, server: Server, seeded: Seeded) -> None:
    a, b = server.wait(seeded.dr["id"]), server.wait(seeded.plain["id"])
    assert a["status"] == b["status"] == "succeeded"
    open_app(page, server)
    for job in (a, b):
        page.locator(f'tr[data-job-id="{job["id"]}"] input[type=checkbox]').check()
    page.click("#compare-selected")
    expect(page).to_have_url(re.compile(r"#/compare\?ids="))
    chart = page.locator('[data-testid="compare-finetune/val_accuracy"]')
    expect(chart).to_have_attribute("data-series", "2")
    epochs = a["spec"]["finetune"]["epochs"]
    expect(chart).to_have_attribute("data-points", str(2 * epochs))
    expect(page.locator('[data-testid="compare-pretrain/recon_error/L0"]')).to_be_visible()
    final = page.locator("#compare-final")
    expect(final.locator("thead th")).to_have_count(3)
    expect(final).to_contain_text("val_accuracy")
    diff = page.locator("#compare-diff")
    for path in ("seed", "pretrain.dr", "finetune.dr"):
        expect(diff.locator(f'tr[data-path^="{path}"]').first).to_be_visible()
    expect(diff.locator('tr[data-path="model.hidden_layers"]')).to_have_count(0)


def test_compare_offers_the_dr_diagnostics(page: Page, server: Server,
                                          diagnosed: dict[str, Any]) -> None:
    open_app(page, server, f"#/compare?ids={diagnosed['id']}")
    # a gradient norm goes on a log scale like the others; a count of pairs does not
    for key, n_points, log in [("finetune/grad_norm_dr.layer1", 3, True),
                               ("pretrain/dr_pairs_per_batch/L1", 2, False)]:
        page.select_option("#compare-metric", key)
        chart = page.locator(f'[data-testid="compare-{key}"]')
        expect(chart).to_have_attribute("data-points", str(n_points))
        expect(chart.locator("figcaption .muted")).to_have_count(1 if log else 0)


def test_sweep_page_shows_mean_std_best_point_and_plot(page: Page, server: Server,
                                                       seeded: Seeded) -> None:
    sweep_id = seeded.sweep["id"]
    for child in seeded.sweep["children"]:
        assert server.wait(child["job_id"])["status"] == "succeeded"
    open_app(page, server, "#/sweeps")
    page.click(f'a[href="#/sweeps/{sweep_id}"]')
    summary = page.locator("#sweep-summary tbody tr")
    n_points = len(SWEEP_GRID["finetune.dr.weight"])
    n_seeds = len(SWEEP_GRID["seed"])
    expect(summary).to_have_count(n_points)
    expect(summary.first).to_contain_text(f"{n_seeds} / {n_seeds}")
    expect(summary.first).to_contain_text("±")
    # "best" marks one grid point, or none when the top mean is shared (a tie is common here:
    # seeds pooled on 360 validation rows)
    with server.client() as c:
        means = [row["metrics"]["val_accuracy"]["mean"]
                 for row in c.get(f"/v1/sweeps/{sweep_id}").json()["summary"]]
    unique = means.count(max(means)) == 1
    best = page.locator('#sweep-summary tr[data-best="true"]')
    expect(best).to_have_count(1 if unique else 0)
    if unique:
        expect(best).to_contain_text("★")
    plot = page.locator('[data-testid="sweep-chart-finetune.dr.weight"]')
    expect(plot).to_have_attribute("data-points", str(3 * n_points))  # mean, mean ± std
    page.select_option("#sweep-metric", "val_loss")
    expect(page.locator("#sweep-summary thead")).to_contain_text("val_loss")
    expect(page.locator('#sweep-summary tr[data-best="true"]')).to_have_count(1)
    expect(page.locator("#sweep-children tbody tr")).to_have_count(n_points * n_seeds)


# ----------------------------------------------------------------------------- submit, datasets

def test_submit_form_shows_the_field_error_then_submits(page: Page, server: Server,
                                                        recorder: Recorder) -> None:
    recorder.allow(r"status of 422")  # the refused first try
    open_app(page, server, "#/submit")
    page.fill('input[name="model.hidden_layers"]', "16")
    page.fill('input[name="pretrain.epochs"]', "5000")
    page.fill('input[name="finetune.epochs"]', "1")
    page.click("#submit-button")
    error = page.locator('.field-error[data-field="pretrain.epochs"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text("1000")
    expect(page.locator("#submit-errors")).to_be_visible()
    expect(page.locator('input[name="pretrain.epochs"]')).to_have_attribute("aria-invalid", "true")

    page.fill('input[name="pretrain.epochs"]', "1")
    page.click("#submit-button")
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f]+$"))
    job_id = page.locator(".job-page").get_attribute("data-job-id")
    assert job_id
    spec = server.job(job_id)["spec"]
    assert spec["pretrain"]["epochs"] == 1 and spec["model"]["hidden_layers"] == [16]
    assert spec["finetune"]["epochs"] == 1 and spec["dataset_id"] == "builtin:digits"


def test_the_form_sets_the_studys_knobs(page: Page, server: Server) -> None:
    # side rows per batch, the initialisation of the vanishing-gradient setting, precision
    open_app(page, server, "#/submit")
    page.fill('input[name="model.hidden_layers"]', "8")
    page.fill('input[name="pretrain.epochs"]', "1")
    page.fill('input[name="pretrain.batch_size"]', "32")
    page.fill('input[name="pretrain.side_rows_per_batch"]', "8")
    page.fill('input[name="finetune.epochs"]', "1")
    page.select_option('select[name="finetune.init"]', "normal")
    page.fill('input[name="finetune.init_std"]', "0.05")
    expect(page.locator('select[name="precision"] option')).not_to_have_count(0)
    expect(page.locator('select[name="test_dataset_id"]')).to_have_value("")
    page.click("#submit-button")
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f]+$"))
    spec = server.job(page.locator(".job-page").get_attribute("data-job-id") or "")["spec"]
    assert spec["pretrain"]["side_rows_per_batch"] == 8 and spec["pretrain"]["batch_size"] == 32
    assert spec["finetune"]["init"] == "normal" and spec["finetune"]["init_std"] == 0.05
    assert spec["test_dataset_id"] is None


def test_name_and_tags_from_the_form_and_the_tag_filter(page: Page, server: Server) -> None:
    open_app(page, server, "#/submit")
    page.fill('input[name="name"]', "tagged from the web")
    page.fill('input[name="tags"]', "web-ui, smoke")
    page.fill('input[name="model.hidden_layers"]', "8")
    page.fill('input[name="pretrain.epochs"]', "1")
    page.fill('input[name="finetune.epochs"]', "1")
    page.click("#submit-button")
    expect(page.locator(".page-head h1")).to_have_text("tagged from the web")
    job_id = page.locator(".job-page").get_attribute("data-job-id")
    job = server.job(job_id)
    assert job["name"] == "tagged from the web" and sorted(job["tags"]) == ["smoke", "web-ui"]
    with server.client() as c:
        listed = c.get("/v1/jobs", params={"tag": "smoke"}).json()["items"]
    assert [j["id"] for j in listed] == [job_id]
    open_app(page, server, "#/jobs?tag=smoke")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    expect(page.locator("#jobs-table tbody tr .tag")).to_have_count(2)


def test_job_warnings_are_shown(page: Page, server: Server) -> None:
    """A batch larger than the training set is one of the warnings a job carries."""
    spec = {**TINY, "pretrain": {**TINY["pretrain"], "epochs": 1, "batch_size": 4096},
            "finetune": {**TINY["finetune"], "epochs": 1, "batch_size": 4096}}
    job = server.wait(server.submit(spec)["id"])
    assert job.get("warnings"), job
    open_app(page, server, f"#/jobs/{job['id']}")
    box = page.locator("#job-warnings")
    for warning in job["warnings"]:
        expect(box).to_contain_text(warning)
    open_app(page, server, "#/jobs")
    expect(page.locator(f'tr[data-job-id="{job["id"]}"] .warn-icon')).to_be_visible()


def _small_csv(n: int = 60) -> bytes:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    out = io.StringIO()
    out.write(",".join([f"p{i}" for i in range(X.shape[1])] + ["label"]) + "\n")
    for row, label in zip(X[:n] / 16.0, y[:n]):
        out.write(",".join(f"{v:.3f}" for v in row) + f",{label}\n")
    return out.getvalue().encode()


def test_datasets_upload_with_progress_list_and_delete(page: Page, server: Server,
                                                       tmp_path: Path) -> None:
    page.add_init_script("""new MutationObserver(() => {
        if (document.getElementById('upload-progress')) window.__sawProgress = true;
    }).observe(document, {childList: true, subtree: true});""")
    csv = tmp_path / "web-digits.csv"
    csv.write_bytes(_small_csv())
    open_app(page, server, "#/datasets")
    expect(page.locator('#datasets-table tr[data-dataset-id="builtin:digits"]')).to_be_visible()
    page.set_input_files('input[name="file"]', str(csv))
    page.fill('input[name="name"]', "web-upload")
    page.click("button:has-text('Upload')")
    expect(page.locator("#datasets-notice")).to_contain_text("Uploaded web-upload: 60 samples")
    assert page.evaluate("window.__sawProgress") is True
    row = page.locator("#datasets-table tr", has_text="web-upload")
    expect(row).to_have_count(1)
    row.locator("button:has-text('Delete')").click()
    row.locator("button:has-text('Really delete?')").click()
    expect(page.locator("#datasets-notice")).to_contain_text("Deleted web-upload")
    expect(page.locator("#datasets-table tr", has_text="web-upload")).to_have_count(0)


def _failed_dataset(server: Server, name: str) -> dict[str, Any]:
    """An upload its check refuses (one class only), as the check left it."""
    with server.client() as c:
        r = c.post("/v1/datasets", data={"name": name},
                   files={"file": (f"{name}.csv", b"a,label\n1,x\n2,x\n", "text/csv")})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (body := c.get(r.headers["location"]).json())["status"] == "validating":
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
    assert body["status"] == "failed" and body["status_reason"], body
    return body


def test_a_failed_dataset_says_why_and_is_not_offered_for_training(page: Page,
                                                                   server: Server) -> None:
    failed = _failed_dataset(server, "web-one-class")
    try:
        open_app(page, server, "#/datasets")
        row = page.locator(f'#datasets-table tr[data-dataset-id="{failed["id"]}"]')
        expect(row.get_by_text(failed["status_reason"])).to_be_visible()  # not only a tooltip
        expect(row.locator("button", has_text="Train on it")).to_have_count(0)
        ready = page.locator('#datasets-table tr[data-dataset-id="builtin:digits"]')
        expect(ready.locator("button", has_text="Train on it")).to_be_visible()

        open_app(page, server, f"#/submit?dataset={failed['id']}")
        note = page.locator("#dataset-note")
        expect(note).to_contain_text("failed its check")
        expect(note).to_contain_text(failed["status_reason"])
        select = page.locator('select[name="dataset_id"]')
        choices = select.locator("option:not([disabled])").evaluate_all("os => os.map(o => o.value)")
        assert "builtin:digits" in choices and failed["id"] not in choices, choices
        assert select.input_value() != failed["id"]

        open_app(page, server, "#/submit?dataset=no-such-dataset")
        expect(page.locator("#dataset-note")).to_contain_text("There is no dataset no-such-dataset")
        expect(select).not_to_have_value("no-such-dataset")
        # submitting with none chosen is stopped here, with words, not sent to be refused
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.click("#submit-button")
        expect(page.locator("#dataset-note")).to_contain_text("Choose a ready dataset")
        expect(page.locator("#submit-errors")).to_have_count(0)
        assert posts == []
    finally:
        with server.client() as c:
            c.delete(f"/v1/datasets/{failed['id']}")


# ----------------------------------------------------------------------------- every view

ROUTES = ["#/jobs", "#/jobs/{dr}", "#/jobs/{long}", "#/compare?ids={dr},{plain}", "#/sweeps",
          "#/sweeps/{sweep}", "#/datasets", "#/submit", "#/submit?sweep=1", "#/submit?from={dr}"]


def test_no_request_leaves_the_origin_and_no_console_error(page: Page, server: Server,
                                                           seeded: Seeded,
                                                           recorder: Recorder) -> None:
    """Every view, one after another in one tab, with its polls and streams running."""
    ids = {"dr": seeded.dr["id"], "plain": seeded.plain["id"], "long": seeded.long["id"],
           "sweep": seeded.sweep["id"]}
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    for i, template in enumerate(ROUTES):
        route = template.format(**ids)
        open_app(page, server, route)
        expect(page.locator("main.page h1")).to_be_visible()
        page.wait_for_timeout(1000)  # let polls, streams and charts run
        view = route.strip("#/").split("?")[0].split("/")[0]
        page.screenshot(path=str(ARTIFACTS / f"view-{i:02d}-{view}.png"), full_page=True)
        assert recorder.foreign == [], (route, recorder.foreign)
        assert recorder.errors == [], (route, recorder.errors)
    assert any("/v1/jobs" in u for u in requests) and any("/app/assets/" in u for u in requests)
    assert all(u.startswith((server.url + "/", "data:", "blob:")) for u in requests)
