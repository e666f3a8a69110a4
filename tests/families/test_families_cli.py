"""``dvt-search families`` and ``dvt-search train`` end to end on a micro phantom (CPU, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvt_search import families
from dvt_search.cli import main
from dvt_search.families.cli import parse_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def micro(phantom_data) -> Path:
    return phantom_data(
        patients=4, seed=1, size=32, slices_per_scan=4, preset="easy", iliac_fraction=0.0
    ).manifest


def test_parse_params_uses_yaml_scalars() -> None:
    got = parse_params(
        ["lr=1e-4", "stem=adapt", "w0=null", "batch_norm=true", "batch_size=4", "dropout=0.25"]
    )
    assert got == {
        "lr": 1e-4,
        "stem": "adapt",
        "w0": None,
        "batch_norm": True,
        "batch_size": 4,
        "dropout": 0.25,
    }
    assert isinstance(got["batch_size"], int)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["lr"])


def test_families_lists_every_family_with_its_space(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["families"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["family", "kind", "search", "space", "exists"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == set(families.names())
    assert rows["vgg16"][1] == "torch" and rows["vgg16"][-1] == "yes"


def test_train_without_splits_writes_a_loadable_checkpoint(
    micro: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "ckpt"
    argv = ["train", "--family", "vgg16", "--data", str(micro), "--size", "32", "--epochs", "2"]
    argv += ["--params", "head=gap", "batch_size=8", "batch_norm=true", "--device", "cpu", "--out", str(ckpt)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no --splits given" in out and "seed 0" in out
    assert "epoch 1:" in out and "epoch 2:" in out and "val_auc=" in out
    model = families.get("vgg16").load(ckpt)
    assert model.epochs_done == 2 and model.params["head"] == "gap"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--family", "nope"], "unknown family"),
        (["--family", "vgg16", "--params", "no_such_knob=1"], "no_such_knob"),
    ],
)
def test_train_reports_bad_arguments(micro: Path, argv: list[str], message: str, capsys) -> None:
    assert main(["train", "--data", str(micro), "--size", "32", *argv]) == 2
    assert message in capsys.readouterr().err
