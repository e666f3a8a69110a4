"""The top-level CLI: every room's commands are registered and `--help` stays cheap and truthful."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dvt_search import __version__
from dvt_search.cli import build_parser, main


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_help_lists_registered_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"data", "families", "train"} <= set(sub.choices)


def test_help_does_not_import_ray_or_torch() -> None:
    code = (
        "import sys; from dvt_search.cli import build_parser; build_parser(); "
        "print('ray' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"], out
