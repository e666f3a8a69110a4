"""The comparison report of a selected run (``dvt-search report RUN [--out reports/<run>]``).

Writes ``report.html`` (one self-contained page: inline CSS, figures as embedded PNGs, no external asset
or script) and ``report.md`` (+ ``figures/*.png``). Everything comes from the run directory (selection,
comparison, predictions, leaderboard, trial curves, Optuna journal); only the CAM overlays read images,
through the run's manifest (``--manifest`` when it moved), and are skipped with a note when unavailable.
Patient ids never appear; mis-classified slices are named by scan and slice.

Sections: header card with the selected model; plain-words verdict (significance judged as in
:mod:`.compare`); the exam-level primary endpoint (scan sensitivity / specificity / PPV / NPV at the
validation-chosen scan threshold, counts per partition); every evaluation of the test set; the paper's Table 1 reproduced beside its numbers; pairwise tests; each family's searched
winner vs its paper-configuration trial (:mod:`.search_vs_paper`); ROC, calibration and
confusion matrices (paper Figs. 5 right and 2); operating points and scan-level AUC; calibration against
its no-skill reference, calibration slope / intercept and the decision curve; Grad-CAM of
mis-classified slices and the patch vein-detection AUC (section 5.4, Fig. 5 left); multitask loss
components (Fig. 3); the search (trial counts, cost, learning curves, Optuna history and importances);
data and splits; methods.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from dvt_search.report.analysis import data, error_analysis, methods, multitask, search, usefulness
from dvt_search.report.context import ReportContext
from dvt_search.report.endpoints import exam, test_evaluations
from dvt_search.report.render import Block, to_html, to_markdown
from dvt_search.report.search_vs_paper import search_vs_paper
from dvt_search.report.sections import comparisons, header, performance, table1, verdict

log = logging.getLogger(__name__)


def build_blocks(c: ReportContext) -> list[Block]:
    """All sections in reading order."""
    return [
        *header(c),
        *verdict(c),
        *exam(c),
        *test_evaluations(c),
        *table1(c),
        *comparisons(c),
        *search_vs_paper(c),
        *performance(c),
        *usefulness(c),
        *error_analysis(c),
        *multitask(c),
        *search(c),
        *data(c),
        *methods(c),
    ]


def write_report(
    run_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    manifest: str | None = None,
    cam_per_family: int = 4,
) -> tuple[Path, Path]:
    """Render ``report.html`` and ``report.md`` (+ ``figures/``) into ``out`` (default ``reports/<run>``).

    The files are built in a temporary folder inside ``out`` and moved into place when complete.
    """
    ctx = ReportContext(Path(run_path), manifest, cam_per_family)
    out = Path(out) if out is not None else Path("reports") / ctx.run_name
    blocks = build_blocks(ctx)
    footer = f"dvt-search report of run {ctx.run_name} · selection made {ctx.selection['created']}"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        (tmp / "report.html").write_text(to_html(f"dvt-search · {ctx.run_name}", blocks, footer))
        (tmp / "report.md").write_text(to_markdown(blocks, tmp / "figures", footer))
        if (out / "figures").exists():
            shutil.rmtree(out / "figures")
        os.replace(tmp / "figures", out / "figures")
        os.replace(tmp / "report.md", out / "report.md")
        os.replace(tmp / "report.html", out / "report.html")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("report written to %s", out / "report.html")
    return out / "report.html", out / "report.md"
