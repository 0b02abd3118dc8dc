"""Refresh the README's screenshot of the job page: ``docs/img/job-page.png``.

    .venv/bin/python -m scripts.web_screenshot [--out docs/img/job-page.png]

Starts ``drtrain up`` in a temporary folder, trains one small DBN with DR on builtin:digits,
opens its job page in Debian's headless Chromium (the browser the tests use; nothing is
downloaded) and saves the screenshot.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.web.server import start  # run from the repository root: python -m scripts...

REPO = Path(__file__).resolve().parents[1]

SPEC = {
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "job-page.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp) / "data", workers=1)
        try:
            with server.client() as c:
                r = c.post("/v1/jobs", json=SPEC)
                if r.status_code == 422:  # a server without names and tags
                    r = c.post("/v1/jobs", json={k: v for k, v in SPEC.items()
                                                 if k not in ("name", "tags")})
                r.raise_for_status()
                job_id = r.json()["id"]
            job = server.wait(job_id, timeout=600)
            if job["status"] != "succeeded":
                print(f"job {job_id} ended {job['status']}: {job['status_reason']}", file=sys.stderr)
                return 1
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1500, "height": 1460})
                page.add_init_script(
                    f"sessionStorage.setItem('drtrain-key', {json.dumps(server.key)})")
                page.goto(f"{server.url}/#/jobs/{job_id}")
                page.wait_for_function("document.querySelector("
                                       "'[data-testid=\"chart-finetune-grad_norm\"]')"
                                       "?.dataset.points > 0")
                page.wait_for_timeout(500)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
