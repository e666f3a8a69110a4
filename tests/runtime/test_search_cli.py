"""``dvt-search search`` refuses bad input before starting Ray, with a message and an exit code."""

from __future__ import annotations

import pytest
from dvt_testkit_runtime import write_spaces

from dvt_search.cli import main


def test_rejects_out_of_range_numbers(tmp_path, capsys) -> None:
    code = main(["search", "--data", "m.parquet", "--storage", str(tmp_path), "--trials", "0"])
    assert code == 2 and "--trials must be >= 1" in capsys.readouterr().err


def test_rejects_unknown_family(phantom, tmp_path, capsys) -> None:
    code = main(
        ["search", "--data", str(phantom), "--storage", str(tmp_path), "--family", "vgg16,resnet9000"]
    )
    assert code == 1 and "unknown family 'resnet9000'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_invalid_space_stops_the_run_before_anything_is_written(phantom, tmp_path, capsys) -> None:
    spaces = write_spaces(
        tmp_path / "spaces", {"vgg16": {"params": {"lr": {"type": "float", "low": 1, "high": 0}}}}
    )
    code = main(
        ["search", "--data", str(phantom), "--storage", str(tmp_path / "runs"), "--family", "vgg16"]
        + ["--space-dir", str(spaces), "--name", "bad"]
    )
    err = capsys.readouterr().err
    assert code == 1 and f"{spaces / 'vgg16.yaml'}: params.lr.low: must be < high" in err
    assert not (tmp_path / "runs" / "bad").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer", "direct", "--train-workers", "2"], "--trainer direct runs one process per trial"),
        (["--resume", "--name", "nothing-here"], "not a dvt-search run directory"),
    ],
)
def test_rejects_contradictory_options(phantom, tmp_path, capsys, args: list[str], message: str) -> None:
    code = main(["search", "--data", str(phantom), "--storage", str(tmp_path), "--family", "vgg16", *args])
    assert code == 1 and message in capsys.readouterr().err


def test_loader_workers_auto_follows_the_cpus_per_trial(tmp_path, capsys) -> None:
    from dvt_search.runtime.options import SearchOptions, resolve_loader_workers

    def workers(**kw) -> int:
        return resolve_loader_workers(SearchOptions(manifest=tmp_path, storage=tmp_path, **kw))

    assert workers() == 0  # 1 CPU per trial: load in the trial's own process
    assert workers(cpus_per_trial=4) == 3 and workers(cpus_per_trial=2.5) == 1
    assert workers(cpus_per_trial=4, loader_workers=0) == 0
    with pytest.raises(SystemExit) as exited:
        main(["search", "--data", "m.parquet", "--storage", str(tmp_path), "--loader-workers", "some"])
    assert exited.value.code == 2
    assert "--loader-workers: expected an integer >= 0 or auto" in capsys.readouterr().err
