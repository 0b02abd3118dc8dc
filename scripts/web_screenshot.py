"""Refresh the screenshots of the web app in ``docs/img/``: every page, from a real run.

    .venv/bin/python -m scripts.web_screenshot [--out docs/img]

Starts ``drtrain up`` in a temporary folder, trains one small DBN with DR on builtin:digits and
a sweep of DR weight by learning rate by seed, opens each page in Debian's headless Chromium
(the browser the tests use; nothing is downloaded) and saves:

    job-page.png  job-page-dark.png  runs-table.png  compare.png  sweep.png  datasets.png  submit.png
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.web.server import Server, start  # run from the repository root: python -m scripts...

REPO = Path(__file__).resolve().parents[1]

SPEC: dict[str, Any] = {
    "name": "digits: DBN 64-32 with DR",
    "tags": ["readme"],
    "dataset_id": "builtin:digits",
    "validation_fraction": 0.2,
    "model": {"hidden_layers": [64, 32]},
    "pretrain": {"epochs": 10, "batch_size": 32, "learning_rate": 0.1,
                 "dr": {"weight": 0.5, "divergence": "hellinger"}},
    "finetune": {"epochs": 20, "batch_size": 32, "learning_rate": 0.1,
                 "dr": {"weight": 0.05, "distance": "euclidean"}},
    "seed": 0,
}
SWEEP_BASE = copy.deepcopy(SPEC) | {"name": "dr-by-lr", "tags": ["sweep"]}
SWEEP_BASE["model"] = {"hidden_layers": [32]}
SWEEP_BASE["pretrain"] = dict(SPEC["pretrain"], epochs=3)
SWEEP_BASE["finetune"] = dict(SPEC["finetune"], epochs=8)
SWEEP_GRID = {"finetune.dr.weight": [0, 0.1], "finetune.learning_rate": [0.05, 0.2], "seed": [0, 1]}
RUNS_COLUMNS = ",".join(["status", "spec.finetune.dr.weight", "spec.finetune.learning_rate", "spec.seed",
                         "result.val_accuracy", "result.test_accuracy", "duration"])


def train(server: Server) -> tuple[str, dict[str, Any]]:
    with server.client() as c:
        r = c.post("/v1/jobs", json=SPEC)
        r.raise_for_status()
        job_id = r.json()["id"]
        r = c.post("/v1/sweeps", json={"base": SWEEP_BASE, "grid": SWEEP_GRID})
        r.raise_for_status()
        sweep = r.json()
    for jid in [job_id, *(ch["job_id"] for ch in sweep["children"])]:
        job = server.wait(jid, timeout=900)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {jid} ended {job['status']}: {job['status_reason']}")
    return job_id, sweep


def shoot(server: Server, out: Path, chromium: str, job_id: str, sweep: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    children = [ch["job_id"] for ch in sweep["children"]]
    points = "document.querySelector('[data-testid=\"{}\"]')?.dataset.points > 0"
    grads = points.format("chart-finetune-grad_norm")
    table = f"#/jobs?cols={RUNS_COLUMNS}&group=spec.finetune.dr.weight&sort=-result.val_accuracy"
    pages = [
        ("job-page.png", "light", f"#/jobs/{job_id}", grads, False),
        ("job-page-dark.png", "dark", f"#/jobs/{job_id}?smooth=0.6", grads, False),
        ("runs-table.png", "light", table, "document.querySelector('#jobs-table tr.group')", False),
        ("compare.png", "light", f"#/compare?ids={','.join(children[:4])}&smooth=0.3",
         points.format("compare-finetune/val_accuracy"), True),
        ("sweep.png", "light", f"#/sweeps/{sweep['id']}", "document.querySelector('#sweep-parcoords')", True),
        ("datasets.png", "light", "#/datasets", "document.querySelector('#datasets-table tbody tr')", False),
        ("submit.png", "light", "#/submit", "document.querySelector('#submit-form')", False),
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for name, scheme, route, ready, full in pages:
            # bypass_csp: Playwright's waits evaluate strings, which the app's policy refuses.
            context = browser.new_context(viewport={"width": 1500, "height": 1300},
                                          color_scheme=scheme, bypass_csp=True)
            page = context.new_page()
            page.add_init_script(f"sessionStorage.setItem('drtrain-key', {json.dumps(server.key)})")
            page.goto(f"{server.url}/{route}")
            page.wait_for_function(ready)
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / name), full_page=full)
            print(f"wrote {out / name}")
            context.close()
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp) / "data", workers=2)
        try:
            job_id, sweep = train(server)
            shoot(server, args.out, args.chromium, job_id, sweep)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
