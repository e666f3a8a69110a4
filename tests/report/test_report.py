"""The report renders, is self-contained, leaks no patient id, and shows in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dvt_search.data.schema import read_manifest
from dvt_search.report.build import write_report

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def report(selected_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    html, md = write_report(selected_run["run"].path, out)
    assert html == out / "report.html" and md == out / "report.md"
    return out


def test_html_is_self_contained_and_complete(report: Path) -> None:
    html = (report / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, flags=re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    n_img = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html))
    assert n_img >= 7  # ROC, confusion, calibration, CAM, multitask, learning curves, optuna history...
    for needle in (
        "Table 1 reproduced",
        "0.55 / 0.56 / 0.72",
        "0.69 / 0.68 / 0.73",
        "Pairwise AUC comparisons",
        "DeLong",
        "Holm",
        "statistically significant",
        "Multitask loss components",
        "Grad-CAM",
        "no trials were run",
        "CPU-hours",
        "phantom",
        "optimisation history",
        "vein-detection",
    ):
        assert needle in html, needle


def test_report_states_one_rule_and_flags_few_patients(report: Path, selected_run) -> None:
    """The tiny run has only a few test patients: the report must say so and claim nothing it cannot."""
    html = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    for text in (html, md):
        assert "Holm-adjusted p-value of the clustered paired test" in text
        assert "all pairs of the families" in text
        assert "rests on the patient-level bootstrap" not in text
        assert "indicative only" in text and "test patients" in text
        assert "<0.001" not in text and "&lt;0.001" not in text
        assert not re.search(r"\[(-?[\d.]+), \1\]", text)  # no zero-width interval such as [1.00, 1.00]


def test_report_shows_the_exam_endpoint_calibration_and_the_test_log(report: Path, selected_run) -> None:
    md = (report / "report.md").read_text()
    for needle in (
        "Exam level: is there a DVT in this scan? (primary endpoint)",
        "| NPV |",
        "DVT patients",
        "DVT scans",
        "exam-level NPV (primary)",
        "Calibration and clinical usefulness",
        "no-skill reference",
        "calibration slope",
        "figures/decision_curve.png",
        "Test-set evaluations",
        "The test set was evaluated once.",
    ):
        assert needle in md, needle
    assert md.index("Exam level: is there") < md.index("Table 1 reproduced")  # the primary endpoint first
    comp = json.loads((selected_run["run"].path / "comparison.json").read_text())
    for fam, st in comp["families"].items():
        y = st["exam"]["test"]["youden"]
        assert f"| {fam} | {st['exam']['aggregation']['how']}" in md
        assert f"{y['tp']} / {y['fp']} / {y['fn']} / {y['tn']}" in md
        cal = st["calibration"]  # the words agree with the table's numbers
        rel = "below (better than)" if cal["brier"] < cal["brier_reference"] else "above (worse than)"
        if round(cal["brier"], 3) == round(cal["brier_reference"], 3):
            rel = "about equal to"
        assert f"{fam} (slices): Brier {cal['brier']:.3f}, {rel} the no-skill reference" in md


def test_report_of_an_older_comparison_says_the_endpoint_is_not_recorded(
    selected_run, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(selected_run["run"].path, run)
    comp = json.loads((run / "comparison.json").read_text())
    comp["format"] = "dvt-search-comparison/2"
    for st in comp["families"].values():
        st.pop("exam")
        st["calibration"] = {k: st["calibration"][k] for k in ("brier", "ece", "bins")}
    (run / "comparison.json").write_text(json.dumps(comp))
    _, md = write_report(run, tmp_path / "out", cam_per_family=0)
    text = md.read_text()
    assert "Not recorded: this comparison was made by an older version" in text
    assert "Table 1 reproduced" in text and "Calibration and clinical usefulness" not in text


def test_report_names_no_patient(report: Path, selected_run) -> None:
    patients = set(read_manifest(selected_run["manifest"])["patient_id"])
    text = (report / "report.html").read_text() + (report / "report.md").read_text()
    assert not [p for p in patients if p in text]


def test_markdown_links_its_figures(report: Path) -> None:
    md = (report / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(links) >= 7 and all((report / link).is_file() for link in links)
    assert "| sift_bow_svm |" in md


def test_report_without_images_still_renders(selected_run, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(selected_run["run"].path, run)
    html, _ = write_report(run, tmp_path / "out", manifest=str(tmp_path / "nowhere.parquet"))
    assert "CAM overlays skipped" in html.read_text()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1280,900",
        (report / "report.html").resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[:2] == (900, 1280)
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0)
    assert img.std() > 20 and len(colours) > 50  # header gradient, text, tables: not a blank page
    top = img[:150].reshape(-1, 3).mean(axis=0)
    assert top[0] > top[2]  # the blue hero header is on screen (BGR: blue channel dominates)
