"""``dvt-search status RUN_DIR``: the per-family table of a run's trials, from the run directory alone."""

from __future__ import annotations

from dvt_testkit_runs import make_run, trial

from dvt_search.cli import main
from dvt_search.rundir.status import status_lines


def _run(tmp_path):
    return make_run(
        tmp_path / "r",
        ["vgg16", "sift_bow_svm"],
        [
            trial("vgg16", "aaaa0001", 0.71, params={"lr": 0.0003, "batch_size": 16}),
            trial("vgg16", "aaaa0002", 0.80, status="stopped", epochs=1, best_epoch=1),
            trial("vgg16", "aaaa0003", 0.65, status="running", epochs=2, best_epoch=2),
            trial("vgg16", "aaaa0004", None, status="failed", epochs=0, error="no GPU on node n1"),
        ],
    )


def test_table_shows_each_trial_with_state_epochs_best_and_params(tmp_path) -> None:
    lines = status_lines(_run(tmp_path))
    text = "\n".join(lines)
    # make_run's budget: 4 trials per family of 3 epochs; 3 of vgg16's 4 trials have ended.
    assert (
        "[vgg16] 3/4 finished: 1 running | 1 completed | 1 stopped | 1 failed (metric val_auc, max)" in text
    )
    assert "[sift_bow_svm] 0/4 finished: no trials yet" in text
    rows = [ln.split() for ln in lines if ln.strip().startswith("aaaa")]
    # live trials first, then finished ones by state; each row: id, state, epochs/budget, best @epoch
    assert [r[:2] for r in rows] == [
        ["aaaa0003", "running"],
        ["aaaa0001", "completed"],
        ["aaaa0002", "stopped"],
        ["aaaa0004", "failed"],
    ]
    assert rows[0][2:5] == ["2/3", "0.6500", "@2"]
    assert rows[1][2:7] == ["3/3", "0.7100", "@3", "batch_size=16", "lr=0.0003"]
    assert rows[2][2:5] == ["1/3", "0.8000", "@1"]
    assert rows[3][2:4] == ["0/3", "-"] and "error: no GPU on node n1" in " ".join(rows[3])


def test_cli_prints_one_family_and_refuses_bad_input(tmp_path, capsys) -> None:
    run = _run(tmp_path)
    assert main(["status", str(run.path), "--family", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "[vgg16]" in out and "[sift_bow_svm]" not in out and "aaaa0004" in out
    assert main(["status", str(run.path), "--family", "densenet161"]) == 1
    assert "the run has no family 'densenet161'" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nothing")]) == 1
    assert "not a dvt-search run directory" in capsys.readouterr().err
