"""Per-family budgets (``--budget FAMILY=TRIALS[xEPOCHS]``): parse errors, resume checks (a search honouring
them: test_concurrent_families.py)."""

from __future__ import annotations

import pytest
from dvt_testkit_runtime import write_spaces

from dvt_search.cli import main
from dvt_search.rundir import RunDir
from dvt_search.runtime.options import parse_budget


def test_budget_entries_parse() -> None:
    assert parse_budget("vgg16=2x1, multitask_unet=4,densenet161=x3") == {
        "vgg16": (2, 1),
        "multitask_unet": (4, None),
        "densenet161": (None, 3),
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("vgg16=two", "--budget entry 'vgg16=two': expected FAMILY=TRIALS"),
        ("vgg16", "--budget entry 'vgg16': expected"),
        ("vgg16=2,", "--budget entry '': expected"),
        ("vgg16=", "--budget entry 'vgg16=': expected"),
        ("vgg16=0x2", "--budget entry 'vgg16=0x2': trials and epochs must be >= 1"),
        ("vgg16=2x0", "--budget entry 'vgg16=2x0': trials and epochs must be >= 1"),
        ("vgg16=2,vgg16=3", "--budget entry 'vgg16=3': family 'vgg16' is given twice"),
    ],
)
def test_a_bad_budget_entry_is_named_without_a_traceback(tmp_path, capsys, value: str, message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["search", "--data", "m.parquet", "--storage", str(tmp_path), "--budget", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        (["densenet161=2"], "--budget names 'densenet161', not among the searched families (vgg16)"),
        (["resnet9000=2"], "--budget names 'resnet9000', not among the searched families"),
        (["vgg16=2", "vgg16=x1"], "--budget: family 'vgg16' is given twice"),
    ],
)
def test_a_budget_for_a_family_not_searched_is_refused(phantom, tmp_path, capsys, budgets, message) -> None:
    argv = ["search", "--data", str(phantom), "--storage", str(tmp_path), "--family", "vgg16"]
    for b in budgets:
        argv += ["--budget", b]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_resume_refuses_a_changed_per_family_budget(phantom, tmp_path) -> None:
    import dvt_test_plugins  # noqa: F401  (registers "scripted" and "tiny_cnn")

    from dvt_search.data.schema import read_manifest
    from dvt_search.runtime.driver import RunError, SearchOptions, run_search
    from dvt_search.runtime.rundir import check_resume, prepare_fresh

    spaces = write_spaces(tmp_path / "spaces", {"scripted": {}, "tiny_cnn": {}})
    rd = RunDir(tmp_path / "runs" / "r")
    df = read_manifest(phantom)
    base = dict(manifest=phantom, storage=tmp_path / "runs", name="r")
    prepare_fresh(
        rd,
        SearchOptions(**base, trials=2, max_epochs=2, budget=[{"scripted": (3, 4)}], space_dir=spaces),
        df,
        ["scripted", "tiny_cnn"],
    )
    for budget, message in (
        ([{"scripted": (4, None)}], "--budget scripted trials 4 differs from the run's 3"),
        ([{"scripted": (None, 2)}], "--budget scripted epochs 2 differs from the run's 4"),
        ([{"tiny_cnn": (3, None)}], "--budget tiny_cnn trials 3 differs from the run's 2"),
        ([{"vgg16": (1, None)}], "--budget names 'vgg16', which the run does not search"),
    ):
        with pytest.raises(RunError, match=message):
            run_search(SearchOptions(**base, resume=True, budget=budget))
    # repeating the run's own numbers (or saying nothing) is no change
    same = [{"scripted": (3, 4), "tiny_cnn": (2, 2)}]
    assert (
        check_resume(rd, SearchOptions(**base, resume=True, budget=same), df).config.budget.trials_for(
            "scripted"
        )
        == 3
    )


# A search honouring the budgets (scripted 3 x 2 beside tiny_cnn at the run's 2 x 1: records, Optuna
# studies, run.json, status lines) is test_concurrent_families.py::test_two_families_search_at_once, which
# shares its Ray search with the families-at-once checks.
