"""The `drtrain-study` command without a service: its entry point, its seed option, and the
committed report (docs/study.md) against the results it was built from."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from drtrain_study import cli
from drtrain_study.plans import parse_seeds
from drtrain_study.records import CURVES_NAME
from drtrain_study.store import RESULTS_NAME

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_command_is_the_packages_entry_point():
    (script,) = entry_points(group="console_scripts", name="drtrain-study")
    assert script.load() is cli.main


def test_seed_counts_parse_globally_or_per_regime():
    regimes = ["digits-10pct", "fashion-1pct"]
    assert parse_seeds("4", regimes, quick=False) == {"digits-10pct": 4, "fashion-1pct": 4}
    assert parse_seeds("fashion-1pct=2", regimes, quick=False) == {"digits-10pct": 10, "fashion-1pct": 2}
    assert parse_seeds(None, regimes, quick=False) == {"digits-10pct": 10, "fashion-1pct": 5}
    assert parse_seeds(None, ["digits-10pct"], quick=True) == {"digits-10pct": 2}


def test_the_committed_study_was_made_through_the_service():
    report = (DOCS / "study.md").read_text()
    assert report.startswith("# Where does DR help?")
    assert "submitted over HTTP with drtrain_client" in report


def test_the_committed_report_is_what_its_results_rebuild(tmp_path):
    assert cli.main(["--report-from", str(DOCS / RESULTS_NAME), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "study.md").read_text() == (DOCS / "study.md").read_text()
    assert (tmp_path / CURVES_NAME).read_text() == (DOCS / CURVES_NAME).read_text()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in DOCS.glob("study_*.png"))


def test_without_matplotlib_the_study_runs_and_says_it_skipped_its_figures(tmp_path):
    # matplotlib is the optional `study` extra: a None in sys.modules makes its import fail
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from drtrain_study.cli import main; sys.exit(main(sys.argv[1:]))")
    shown = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True,
                           text=True, check=False)
    assert shown.returncode == 0 and "--report-from" in shown.stdout, shown.stderr
    out = tmp_path / "out"
    rebuilt = subprocess.run([sys.executable, "-c", code, "--report-from",
                              str(DOCS / RESULTS_NAME), "--out", str(out)],
                             capture_output=True, text=True, check=False)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "figures skipped: they need matplotlib (pip install 'drtrain[study]')" in rebuilt.stderr
    assert (out / "study.md").is_file() and (out / RESULTS_NAME).is_file()
    assert (out / CURVES_NAME).is_file() and not list(out.glob("*.png"))
