"""The web app as a researcher uses it: charts that export, smooth, rescale and zoom together;
a runs table with chosen columns and groups; compare and table views restored from their URL;
runs told apart; a remembered key; dark mode; and a form whose untouched submit is the API's
own default spec. Real `drtrain up`, Debian's headless Chromium (see conftest.py).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.web.server import TINY, Server
from tests.web.test_app import legend_at_last_epoch, metric_points, open_app

if TYPE_CHECKING:
    from tests.web.conftest import Recorder, Seeded

LOSS = "chart-finetune-loss"


def finished(server: Server, job: dict[str, Any]) -> dict[str, Any]:
    done = server.wait(job["id"])
    assert done["status"] == "succeeded", done
    return done


def canvas(page: Page, testid: str) -> str:
    """What the chart's canvas shows, as a PNG data URL (equal strings: the same pixels)."""
    return page.locator(f'[data-testid="{testid}"] canvas').evaluate("c => c.toDataURL()")


def debiased_ema(values: list[float], weight: float) -> float:
    """TensorBoard's smoothing of a series, its last value."""
    last, n = 0.0, 0
    for v in values:
        last = last * weight + (1 - weight) * v
        n += 1
    return last / (1 - weight ** n)


# ----------------------------------------------------------------------------- charts

def test_chart_csv_export_rows_equal_the_api_points(page: Page, server: Server, seeded: Seeded,
                                                    tmp_path: Path) -> None:
    job = finished(server, seeded.dr)
    open_app(page, server, f"#/jobs/{job['id']}")
    chart = page.locator(f'[data-testid="{LOSS}"]')
    page.wait_for_function(f"document.querySelector('[data-testid=\"{LOSS}\"]')?.dataset.points > 0")
    with page.expect_download() as info:
        chart.locator('button[data-export="csv"]').click()
    path = tmp_path / "loss.csv"
    info.value.save_as(path)
    assert info.value.suggested_filename == "loss.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    exported = sorted((int(r["seq"]), r["phase"], r["layer"], int(r["epoch"]), r["name"], float(r["value"]), r["at"])
                      for r in rows)
    api = sorted((p["seq"], p["phase"], "" if p["layer"] is None else str(p["layer"]), p["epoch"], p["name"],
                  p["value"], p["at"])
                 for p in metric_points(server, job["id"])
                 if p["phase"] == "finetune" and p["name"] in ("train_loss", "val_loss"))
    assert exported == api and len(api) == 2 * job["spec"]["finetune"]["epochs"]
    assert {r["series"] for r in rows} == {"train", "validation"}
    assert {r["job_id"] for r in rows} == {job["id"]}  # the page's job, named in every row

    with page.expect_download() as info:
        chart.locator('button[data-export="png"]').click()
    png = tmp_path / "loss.png"
    info.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and info.value.suggested_filename == "loss.png"


def test_smoothing_and_log_change_the_drawn_data(page: Page, server: Server, seeded: Seeded) -> None:
    job = finished(server, seeded.dr)
    open_app(page, server, f"#/jobs/{job['id']}")
    page.wait_for_function(f"document.querySelector('[data-testid=\"{LOSS}\"]')?.dataset.points > 0")
    train = [p["value"] for p in sorted(metric_points(server, job["id"]), key=lambda p: p["epoch"])
             if p["phase"] == "finetune" and p["name"] == "train_loss"]
    raw = legend_at_last_epoch(page, LOSS)
    assert float(raw["train"]) == pytest.approx(train[-1], rel=1e-3)
    before = canvas(page, LOSS)

    page.locator("#chart-smooth").fill("0.6")
    expect(page).to_have_url(re.compile(r"smooth=0\.6"))
    expect(page.locator(f'[data-testid="{LOSS}"]')).to_have_attribute("data-smooth", "0.6")
    smoothed = legend_at_last_epoch(page, LOSS)
    assert float(smoothed["train"]) == pytest.approx(debiased_ema(train, 0.6), rel=1e-3)
    assert float(smoothed["train"]) != pytest.approx(train[-1], rel=1e-3)
    # the raw line stays drawn, faint, behind the smoothed one: one more series per line
    assert page.locator(f'[data-testid="{LOSS}"] .u-legend .u-series').count() == 1 + 2 * 2
    smoothed_pixels = canvas(page, LOSS)
    assert smoothed_pixels != before

    page.select_option("#chart-y", "log")
    expect(page).to_have_url(re.compile(r"y=log"))
    expect(page.locator(f'[data-testid="{LOSS}"]')).to_have_attribute("data-log", "true")
    expect(page.locator(f'[data-testid="{LOSS}"] figcaption')).to_contain_text("log scale")
    page.wait_for_timeout(200)
    assert canvas(page, LOSS) != smoothed_pixels


def test_x_axis_wall_time_and_zoom_shared_with_a_reset(page: Page, server: Server, seeded: Seeded) -> None:
    job = finished(server, seeded.dr)
    open_app(page, server, f"#/jobs/{job['id']}")
    acc = "chart-finetune-accuracy"
    # Every epoch drawn before the pixels are compared: a chart still filling in would
    # differ from itself after the reset.
    epochs = job["spec"]["finetune"]["epochs"]
    for chart in (LOSS, acc):  # a point per epoch in each series (train, validation)
        page.wait_for_function(f"(f => f && +f.dataset.points === {epochs} * +f.dataset.series)"
                               f"(document.querySelector('[data-testid=\"{chart}\"]'))")
    x_legend = page.locator(f'[data-testid="{LOSS}"] .u-legend .u-series').first
    expect(x_legend).to_contain_text("epoch")
    page.select_option("#chart-x", "wall")
    expect(page).to_have_url(re.compile(r"x=wall"))
    expect(x_legend).to_contain_text("wall time")

    expect(page.locator("#reset-zoom")).to_be_disabled()
    expect(page.locator("#chart-controls")).to_contain_text("Drag across a chart to zoom")
    before = canvas(page, acc)
    over = page.locator(f'[data-testid="{LOSS}"] .u-over')
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, y, steps=5)
    page.mouse.up()
    expect(page.locator("#reset-zoom")).to_be_enabled()
    page.wait_for_timeout(200)
    zoomed = canvas(page, acc)
    assert zoomed != before  # the other chart zoomed with it
    page.click("#reset-zoom")
    expect(page.locator("#reset-zoom")).to_be_disabled()
    page.wait_for_timeout(200)
    assert canvas(page, acc) == before


def drawn_x(page: Page, testid: str) -> list[float]:
    """The x values a chart draws, as its legend shows them while the cursor crosses the plot."""
    over = page.locator(f'[data-testid="{testid}"] .u-over')
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box
    shown = page.locator(f'[data-testid="{testid}"] .u-legend .u-series').first.locator(".u-value")
    seen: set[float] = set()
    for i in range(41):
        page.mouse.move(box["x"] + box["width"] * i / 40, box["y"] + box["height"] / 2)
        page.wait_for_timeout(20)
        if text := shown.inner_text().strip():
            seen.add(float(text))
    return sorted(seen)


def run_steps(server: Server, job_id: str) -> tuple[int, list[int]]:
    """A job's pretraining epochs over all layers, and its fine-tuning epochs, from the API."""
    points = metric_points(server, job_id)
    pretrain = {(p["layer"], p["epoch"]) for p in points if p["phase"] == "pretrain"}
    return len(pretrain), sorted({p["epoch"] for p in points if p["phase"] == "finetune"})


def test_x_axis_step_counts_the_runs_epochs_across_phases(page: Page, server: Server, seeded: Seeded) -> None:
    job = finished(server, seeded.diagnosed)  # two pretraining layers, then fine-tuning
    pretrained, tuned = run_steps(server, job["id"])
    assert pretrained == 2 * job["spec"]["pretrain"]["epochs"] and tuned == [1, 2, 3]
    open_app(page, server, f"#/jobs/{job['id']}")
    page.wait_for_function(f"document.querySelector('[data-testid=\"{LOSS}\"]')?.dataset.points > 0")
    assert drawn_x(page, LOSS) == tuned
    page.select_option("#chart-x", "step")
    expect(page).to_have_url(re.compile(r"x=step"))
    expect(page.locator(f'[data-testid="{LOSS}"] .u-legend .u-series').first).to_contain_text("step")
    steps = [pretrained + e for e in tuned]
    assert drawn_x(page, LOSS) == steps
    assert drawn_x(page, "chart-pretrain-recon_error") == list(range(1, pretrained + 1))

    page.reload()  # the URL alone restores the step axis
    expect(page.locator("#chart-x")).to_have_value("step")
    page.wait_for_function(f"document.querySelector('[data-testid=\"{LOSS}\"]')?.dataset.points > 0")
    assert drawn_x(page, LOSS) == steps

    # in compare each run counts its own steps: one pretraining layer here, two there
    other = finished(server, seeded.dr)
    other_pretrained, other_tuned = run_steps(server, other["id"])
    assert other_pretrained != pretrained
    open_app(page, server, f"#/compare?ids={job['id']},{other['id']}&x=step")
    chart = "compare-finetune/val_loss"
    expect(page.locator(f'[data-testid="{chart}"]')).to_have_attribute("data-series", "2")
    page.wait_for_function(f"document.querySelector('[data-testid=\"{chart}\"]')?.dataset.points >= {len(tuned) + len(other_tuned)}")
    assert drawn_x(page, chart) == sorted({*steps, *(other_pretrained + e for e in other_tuned)})


# ----------------------------------------------------------------------------- compare

def test_the_url_restores_a_compare_view(page: Page, server: Server, seeded: Seeded) -> None:
    a, b = finished(server, seeded.dr), finished(server, seeded.plain)
    extra = "pretrain/cross_group_divergence/L0"  # measured with DR or without: both drawn
    open_app(page, server, f"#/compare?ids={a['id']},{b['id']}&m={extra}&smooth=0.5&y=log&x=wall")
    chart = page.locator(f'[data-testid="compare-{extra}"]')
    expect(chart).to_have_attribute("data-series", "2")
    expect(chart).to_have_attribute("data-log", "true")
    expect(chart).to_have_attribute("data-smooth", "0.5")
    expect(chart).to_contain_text("wall time")
    expect(page.locator("#chart-y")).to_have_value("log")
    expect(page.locator("#chart-x")).to_have_value("wall")
    expect(page.locator("#chart-smooth")).to_have_value("0.5")
    # and the page writes what changes back into its URL
    page.select_option("#compare-metric", "pretrain/free_energy_gap/L0")
    expect(page).to_have_url(
        re.compile(r"m=pretrain/cross_group_divergence/L0,pretrain/free_energy_gap/L0"))
    page.click(".picker summary")  # the picker is folded once two jobs are chosen
    page.fill("#compare-filter", "zzz")
    expect(page).to_have_url(re.compile(r"q=zzz"))


def test_compare_names_runs_by_what_sets_them_apart(page: Page, server: Server, seeded: Seeded) -> None:
    """Four sweep jobs share a base spec: each is named by its grid point and short id."""
    ids = [c["job_id"] for c in seeded.sweep["children"]]
    for i in ids:
        finished(server, {"id": i})
    open_app(page, server, f"#/compare?ids={','.join(ids)}")
    legend = page.locator("#compare-legend span")
    expect(legend).to_have_count(4)
    texts = legend.all_inner_texts()
    assert len(set(texts)) == 4, texts
    for child, text in zip(seeded.sweep["children"], texts, strict=True):
        point = child["grid_point"]
        assert f"seed={point['seed']}" in text and child["job_id"][:8] in text, text
        assert "ft.dr.weight=" in text, text


def test_a_deleted_id_leaves_the_rest_of_compare_drawn(page: Page, server: Server, seeded: Seeded,
                                                      recorder: Recorder) -> None:
    recorder.allow(r"status of 404")
    a, b = finished(server, seeded.dr), finished(server, seeded.plain)
    gone = server.submit(TINY | {"pretrain": None, "finetune": dict(TINY["finetune"], epochs=1)})
    server.wait(gone["id"])
    with server.client() as c:
        assert c.delete(f"/v1/jobs/{gone['id']}").status_code == 204
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if gone["id"] in r.url else None)
    open_app(page, server, f"#/compare?ids={a['id']},{gone['id']},{b['id']}")
    warning = page.locator(f'#compare-missing [data-missing="{gone["id"]}"]')
    expect(warning).to_contain_text("was not found")
    chart = page.locator('[data-testid="compare-finetune/val_accuracy"]')
    expect(chart).to_have_attribute("data-series", "2")
    expect(page.locator("#compare-final thead th")).to_have_count(3)
    n = len(asked)
    page.wait_for_timeout(7000)  # two more polls
    assert len(asked) == n, asked  # not asked for again
    page.click("#compare-missing button")
    expect(page).not_to_have_url(re.compile(gone["id"]))
    expect(page.locator("#compare-missing")).to_have_count(0)


# ----------------------------------------------------------------------------- runs table

TABLE_TAG = "runs-table"


@pytest.fixture(scope="module")
def table_jobs(server: Server, seeded: Seeded) -> list[dict[str, Any]]:
    """Four short jobs, two seeds by two learning rates, tagged so the table can show only them."""
    jobs = []
    for seed in (0, 1):
        for lr in (0.1, 0.05):
            spec = copy.deepcopy(TINY) | {"seed": seed, "tags": [TABLE_TAG], "name": "grid"}
            spec["pretrain"] = dict(TINY["pretrain"], epochs=1)
            spec["finetune"] = dict(TINY["finetune"], epochs=1, learning_rate=lr)
            jobs.append(server.submit(spec))
    return [finished(server, j) for j in jobs]


def test_the_url_restores_a_runs_table_with_groups(page: Page, server: Server,
                                                   table_jobs: list[dict[str, Any]]) -> None:
    cols = "status,spec.finetune.learning_rate,spec.seed,result.val_accuracy"
    open_app(page, server, f"#/jobs?tag={TABLE_TAG}&cols={cols}&group=spec.seed&sort=spec.finetune.learning_rate")
    heads = page.locator("#jobs-table thead th")
    expect(heads).to_have_count(2 + 4)
    assert heads.all_inner_texts()[1:] == ["Job", "Status", "finetune.learning_rate ▴", "seed", "Validation accuracy"]
    groups = page.locator("#jobs-table tr.group")
    expect(groups).to_have_count(2)
    for seed in (0, 1):
        vals = [j["result"]["val_accuracy"] for j in table_jobs if j["spec"]["seed"] == seed]
        mean = sum(vals) / 2
        std = (sum((v - mean) ** 2 for v in vals) / 1) ** 0.5
        cell = page.locator(f'#jobs-table tr.group[data-group="{seed}"] td[data-col="result.val_accuracy"]').inner_text()
        # shown as the column shows each run: a percentage with one decimal
        shown_mean, shown_std = (float(x.rstrip("%")) / 100 for x in cell.split(" ± "))
        assert shown_mean == pytest.approx(mean, abs=5e-4) and shown_std == pytest.approx(std, abs=5e-4)
    # the jobs share a name: each row says what sets it apart
    telling = page.locator("#jobs-table .telling").all_inner_texts()
    assert len(telling) == 4 and all("ft.learning_rate=" in t for t in telling), telling

    # choices made on the page go into the URL
    page.locator("#columns-picker summary").click()
    page.check('input[data-column="spec.pretrain.dr.weight"]')
    expect(page).to_have_url(re.compile(r"cols=[^&]*spec\.pretrain\.dr\.weight"))
    page.select_option("#group-by", "")
    expect(page).not_to_have_url(re.compile(r"group="))
    expect(groups).to_have_count(0)
    # and select runs to compare from the table
    for j in table_jobs[:2]:
        page.locator(f'tr[data-job-id="{j["id"]}"] input[type=checkbox]').check()
    page.click("#compare-selected")
    expect(page).to_have_url(re.compile(f"#/compare\\?ids={table_jobs[0]['id']},{table_jobs[1]['id']}"))


# ----------------------------------------------------------------------------- sign-in, theme

def test_a_remembered_key_opens_a_shared_link_in_a_new_page(anon_page: Page, server: Server,
                                                           seeded: Seeded) -> None:
    link = f"{server.url}/#/compare?ids={seeded.dr['id']}"
    page = anon_page
    open_app(page, server, "")
    expect(page.locator("#remember-key")).not_to_be_checked()  # off unless asked for
    page.fill("#api-key", server.key)
    page.click("button:has-text('Sign in')")
    expect(page.locator("#jobs-table")).to_be_visible()
    other = page.context.new_page()
    other.goto(link)
    expect(other.locator("#api-key")).to_be_visible()  # this tab's key only
    other.close()

    page.click("text=Sign out")
    page.fill("#api-key", server.key)
    page.check("#remember-key")
    page.click("button:has-text('Sign in')")
    expect(page.locator("#jobs-table")).to_be_visible()
    shared = page.context.new_page()
    shared.goto(link)
    expect(shared.locator("main.page h1")).to_have_text("Compare")
    expect(shared.locator("#compare-legend")).to_contain_text(seeded.dr["id"][:8])
    shared.click("text=Sign out")  # forgets it on this device
    assert shared.evaluate("localStorage.getItem('drtrain-key')") is None
    third = page.context.new_page()
    third.goto(link)
    expect(third.locator("#api-key")).to_be_visible()
    third.close()
    shared.close()


def luminance(page: Page, selector: str) -> float:
    rgb = page.locator(selector).first.evaluate("e => getComputedStyle(e).backgroundColor")
    r, g, b = (int(x) for x in re.findall(r"\d+", rgb)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_dark_mode_follows_the_system_and_the_toggle_is_kept(browser: Browser, server: Server,
                                                             seeded: Seeded) -> None:
    context = browser.new_context(color_scheme="dark", base_url=server.url)
    page = context.new_page()
    page.add_init_script(f"sessionStorage.setItem('drtrain-key', {json.dumps(server.key)})")
    try:
        page.goto(f"{server.url}/#/jobs/{finished(server, seeded.dr)['id']}")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        page.wait_for_function(f"document.querySelector('[data-testid=\"{LOSS}\"]')?.dataset.points > 0")
        assert luminance(page, "html") < 0.15 and luminance(page, ".card") < 0.2
        axis = page.locator(f'[data-testid="{LOSS}"] canvas')
        assert axis.count() == 1
        page.click("#theme-toggle")
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        assert luminance(page, "html") > 0.85 and luminance(page, ".card") > 0.9
        page.reload()  # the choice is kept on this device
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        page.click("#theme-toggle")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        page.screenshot(path=str(Path(server.data_dir).parent / "dark.png"))
    finally:
        context.close()


# ----------------------------------------------------------------------------- state

def test_the_untouched_form_submits_the_apis_defaults(page: Page, server: Server) -> None:
    open_app(page, server, "#/submit")
    expect(page.locator('input[name="finetune.dr.enabled"]')).not_to_be_checked()
    page.click("#submit-button")
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f]+$"))
    job_id = page.locator(".job-page").get_attribute("data-job-id")
    assert job_id
    spec = server.job(job_id)["spec"]
    with server.client() as c:
        # the API's own defaults: a spec that names only the dataset, as the server stores it
        api = c.post("/v1/jobs", json={"dataset_id": spec["dataset_id"]}).json()
        for jid in (job_id, api["id"]):  # a default job trains for minutes: stop both
            c.post(f"/v1/jobs/{jid}/cancel")
    assert spec == api["spec"]
    assert spec["finetune"]["dr"] is None  # feature DR is off by default, and so in the form


def test_a_cancelled_job_says_so_instead_of_waiting(page: Page, server: Server) -> None:
    spec = copy.deepcopy(TINY) | {"max_runtime_seconds": 60}
    spec["pretrain"] = dict(TINY["pretrain"], epochs=1000)  # cancelled long before fine-tuning
    job = server.submit(spec)
    with server.client() as c:
        assert c.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
    server.wait(job["id"])
    open_app(page, server, f"#/jobs/{job['id']}")
    empty = page.locator(f'[data-testid="{LOSS}"] .chart-empty')
    expect(empty).to_contain_text("cancelled before")
    expect(page.locator(".chart-empty", has_text="waiting")).to_have_count(0)
    expect(page.locator("#checkpoints-empty")).not_to_contain_text("after every epoch")


def test_checkpoint_text_says_the_servers_cadence(page: Page, server: Server, recorder: Recorder) -> None:
    job = server.submit(TINY | {"max_runtime_seconds": 60})

    def cadence(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"checkpoint_every_epochs": 7, "checkpoint_every_seconds": 45}))

    def no_checkpoints(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"items": [], "next_page_token": None}))

    page.route("**/v1/settings", cadence)  # as a server set up with other values answers
    page.route(f"**/v1/jobs/{job['id']}/checkpoints", no_checkpoints)
    open_app(page, server, f"#/jobs/{job['id']}")
    expect(page.locator("#checkpoints-empty")).to_contain_text("every 7 epochs or 45 s")


def test_delete_a_job_after_confirming(page: Page, server: Server) -> None:
    job = server.wait(server.submit(TINY | {"pretrain": None, "finetune": dict(TINY["finetune"], epochs=1)})["id"])
    open_app(page, server, f"#/jobs/{job['id']}")
    page.click("#delete-job")
    expect(page.locator("#delete-job-yes")).to_be_visible()
    page.click("#delete-job-no")  # asked, not done
    assert server.job(job["id"])["id"] == job["id"]
    page.click("#delete-job")
    page.click("#delete-job-yes")
    expect(page).to_have_url(re.compile(r"#/jobs$"))
    with server.client() as c:
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_sweep_marks_best_only_when_unique_and_draws_parallel_coordinates(page: Page, server: Server,
                                                                         seeded: Seeded) -> None:
    sweep_id = seeded.sweep["id"]
    for child in seeded.sweep["children"]:
        finished(server, {"id": child["job_id"]})
    with server.client() as c:
        real = c.get(f"/v1/sweeps/{sweep_id}").json()
    tied = copy.deepcopy(real)
    # two swept paths (as a grid of learning rate by DR weight would give) and a tie at the top
    for i, row in enumerate(tied["summary"]):
        row["point"]["finetune.learning_rate"] = [0.1, 0.2][i % 2]
        row["metrics"]["val_accuracy"] = {"mean": 0.9, "std": 0.01}

    def serve(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(tied))

    page.route(f"**/v1/sweeps/{sweep_id}", serve)
    open_app(page, server, f"#/sweeps/{sweep_id}")
    expect(page.locator("#sweep-summary tbody tr")).to_have_count(len(tied["summary"]))
    expect(page.locator('#sweep-summary tr[data-best="true"]')).to_have_count(0)
    expect(page.locator("#sweep-parcoords polyline")).to_have_count(len(tied["summary"]))


def test_sweep_pages_say_what_the_grid_varies_and_how_sure_the_best_is(page: Page,
                                                                       server: Server,
                                                                       seeded: Seeded) -> None:
    sweep_id = seeded.sweep["id"]
    for child in seeded.sweep["children"]:
        finished(server, {"id": child["job_id"]})
    # the base's fine-tuning weight (0.05) is no job's: the grid varies it
    open_app(page, server, "#/sweeps")
    expect(page.locator("#sweeps-table")).to_contain_text("ft euclidean λ swept")
    with server.client() as c:
        real = c.get(f"/v1/sweeps/{sweep_id}").json()
    served: dict[str, Any] = {}
    page.route(f"**/v1/sweeps/{sweep_id}", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(served)))
    rows = page.locator("#sweep-summary tbody tr")
    for (top, other), mark in [
            # one run each: no spread, so the higher mean is not called best
            (({"mean": 0.9, "std": 0.0, "n": 1}, {"mean": 0.8, "std": 0.0, "n": 1}), "top mean"),
            # the spreads overlap: the same
            (({"mean": 0.9, "std": 0.06, "n": 2}, {"mean": 0.8, "std": 0.05, "n": 2}), "top mean"),
            (({"mean": 0.9, "std": 0.01, "n": 2}, {"mean": 0.8, "std": 0.01, "n": 2}), "★ best")]:
        served.clear()
        served.update(copy.deepcopy(real))
        for row, figure in zip(served["summary"], (top, other), strict=True):
            row["metrics"]["val_accuracy"] = figure
        open_app(page, server, f"#/sweeps/{sweep_id}")
        page.reload()  # the same address again: the app would keep the sweep it has
        expect(page.locator(".summary.card")).to_contain_text("ft euclidean λ swept")
        expect(page.locator(".summary.card")).not_to_contain_text("λ0.05")
        best = page.locator('#sweep-summary tr[data-best="true"]')
        expect(best).to_have_count(1)
        expect(best).to_contain_text(mark)
        if mark == "top mean":
            expect(best).not_to_contain_text("★ best")
        figure = rows.first.locator("td.strong")  # the chosen metric's cell
        if top["n"] == 1:
            expect(figure).to_contain_text("0.9 (1 run)")
            expect(figure).not_to_contain_text("±")
        else:
            expect(figure).to_contain_text("0.9 ± 0.")


def test_compare_names_the_datasets_its_runs_differ_in(page: Page, server: Server,
                                                      seeded: Seeded) -> None:
    a, b = finished(server, seeded.dr), finished(server, seeded.plain)
    other = "f" * 32
    # b as a's twin on another dataset: the dataset is all that sets them apart
    twin = copy.deepcopy(a) | {"id": b["id"], "dataset_id": other}
    twin["spec"]["dataset_id"] = other
    page.route(f"**/v1/jobs/{b['id']}", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(twin)))

    def datasets(route: Route) -> None:
        body = route.fetch().json()
        body["items"].append(dict(body["items"][0], id=other, name="fashion-1pct"))
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/v1/datasets", datasets)
    open_app(page, server, f"#/compare?ids={a['id']},{b['id']}")
    row = page.locator('#compare-diff tr[data-path="dataset_id"]')
    expect(row).to_contain_text("fashion-1pct")
    expect(row).not_to_contain_text(other[:8])
    expect(page.locator("#compare-diff thead")).to_contain_text("dataset_id=fashion-1pct")


def test_compare_draws_no_dr_value_for_a_run_without_dr(page: Page, server: Server,
                                                       seeded: Seeded) -> None:
    dr, plain = finished(server, seeded.dr), finished(server, seeded.plain)
    open_app(page, server, f"#/compare?ids={dr['id']},{plain['id']}")
    page.select_option("#compare-metric", "pretrain/dr/L0")
    chart = page.locator('[data-testid="compare-pretrain/dr/L0"]')
    expect(chart).to_have_attribute("data-series", "1")  # the plain run's 0s are no value
    epochs = dr["spec"]["pretrain"]["epochs"]
    expect(chart).to_have_attribute("data-points", str(epochs))
    # its other figures are drawn for both
    expect(page.locator('[data-testid="compare-finetune/val_accuracy"]')).to_have_attribute(
        "data-series", "2")


def test_delete_a_sweep_deletes_it_and_its_jobs_after_confirming(page: Page, server: Server,
                                                                 recorder: Recorder) -> None:
    recorder.allow(r"status of 409")  # Chromium logs the refused delete itself
    base = TINY | {"pretrain": None, "finetune": dict(TINY["finetune"], epochs=1)}
    with server.client() as c:
        r = c.post("/v1/sweeps", json={"base": base, "grid": {"seed": [0, 1]}})
        assert r.status_code == 202, r.text
    sweep = r.json()
    for child in sweep["children"]:
        server.wait(child["job_id"])
    # A refusal first (as the API answers while a job of the sweep is active): its problem
    # detail is shown as an error and the page stays.
    refusal = {"type": "https://drtrain.dev/problems/conflict", "title": "Conflict",
               "status": 409, "detail": f"sweep {sweep['id']} has 1 active job(s): x (running)"}

    def refuse(route: Route) -> None:
        if route.request.method != "DELETE":
            return route.continue_()
        return route.fulfill(status=409, content_type="application/problem+json",
                             body=json.dumps(refusal))

    page.route(f"**/v1/sweeps/{sweep['id']}", refuse)
    open_app(page, server, f"#/sweeps/{sweep['id']}")
    page.click("#delete-sweep")
    expect(page.locator("#delete-sweep-yes")).to_contain_text("delete")
    page.click("#delete-sweep-yes")
    error = page.locator("#sweep-delete-error")
    expect(error).to_contain_text(refusal["detail"])
    expect(error).to_have_class(re.compile(r"\berror\b"))
    page.unroute(f"**/v1/sweeps/{sweep['id']}")
    page.click("#delete-sweep")
    page.click("#delete-sweep-yes")
    expect(page).to_have_url(re.compile(r"#/sweeps$"))
    with server.client() as c:
        assert c.get(f"/v1/sweeps/{sweep['id']}").status_code == 404
        for child in sweep["children"]:
            assert c.get(f"/v1/jobs/{child['job_id']}").status_code == 404


def test_cancel_a_sweep_cancels_its_active_jobs_after_confirming(page: Page,
                                                                  server: Server) -> None:
    # Jobs long enough to be still queued or running when the cancel comes.
    base = TINY | {"model": {"hidden_layers": [256, 256]},
                   "pretrain": dict(TINY["pretrain"], epochs=1000, batch_size=16)}
    with server.client() as c:
        r = c.post("/v1/sweeps", json={"base": base, "grid": {"seed": [0, 1, 2]}})
        assert r.status_code == 202, r.text
    sweep = r.json()
    open_app(page, server, f"#/sweeps/{sweep['id']}")
    expect(page.locator("#cancel-sweep")).to_contain_text("Cancel 3 active jobs")
    page.click("#cancel-sweep")
    page.click("#cancel-sweep-no")  # asking first: nothing happens without a yes
    with server.client() as c:
        assert all(c.get(f"/v1/jobs/{child['job_id']}").json()["status"] in ("queued", "running")
                   for child in sweep["children"])
    page.click("#cancel-sweep")
    page.click("#cancel-sweep-yes")
    # running jobs stop within a batch; once every job has ended the page offers the delete
    expect(page.locator("#delete-sweep")).to_be_visible(timeout=60_000)
    expect(page.locator("#cancel-sweep")).to_have_count(0)
    with server.client() as c:
        statuses = {c.get(f"/v1/jobs/{child['job_id']}").json()["status"]
                    for child in sweep["children"]}
    assert statuses == {"cancelled"}


def test_a_sweep_plot_spaces_a_dr_weight_over_decades_evenly(page: Page, server: Server) -> None:
    """A DR weight swept over 0, 0.01, 0.1, 1 is drawn evenly spaced and labelled (on a linear
    axis three of its points would crowd into a corner); evenly spaced epochs stay numbers."""
    sweep_id, weights, epochs = "d" * 32, [0, 0.01, 0.1, 1], [5, 10, 15]
    points = [{"pretrain.dr.weight": w, "finetune.epochs": e} for w in weights for e in epochs]
    body = {"id": sweep_id, "base": TINY, "created_at": "2026-01-01T00:00:00Z",
            "grid": {"pretrain.dr.weight": weights, "finetune.epochs": epochs},
            "children": [{"job_id": f"{i:032x}", "grid_point": p, "status": "succeeded",
                          "result": None} for i, p in enumerate(points)],
            "summary": [{"point": p, "n": 1, "n_done": 1,
                         "metrics": {"val_accuracy": {"mean": 0.5 + i / 100, "std": 0.0, "n": 1}}}
                        for i, p in enumerate(points)]}
    page.route(f"**/v1/sweeps/{sweep_id}", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(body)))
    open_app(page, server, f"#/sweeps/{sweep_id}")
    weight_plot = page.locator('[data-testid="sweep-chart-pretrain.dr.weight"]')
    expect(weight_plot).to_have_attribute("data-x-labels", "0 | 0.01 | 0.1 | 1")
    epochs_plot = page.locator('[data-testid="sweep-chart-finetune.epochs"]')
    expect(epochs_plot).to_be_visible()
    expect(epochs_plot).not_to_have_attribute("data-x-labels", re.compile(".*"))
