"""A torn last record in the Optuna journal (a writer killed mid-write) is found, backed up and dropped."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from dvt_search.rundir.journal import complete_size, repair_journal


def _storage(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def _journal(path: Path, trials: int = 3) -> int:
    """A journal written by Optuna: ``trials`` complete trials of study ``f``; returns its size."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="f", storage=_storage(path), direction="maximize")
    for i in range(trials):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, 0.1 * i)
    return path.stat().st_size


def _tear(path: Path) -> tuple[int, int]:
    """Append one more record (a new trial) and cut it mid-write; returns (complete size, torn size)."""
    intact = path.stat().st_size
    optuna.load_study(study_name="f", storage=_storage(path)).ask()
    record = path.read_bytes()[intact:]
    assert record.endswith(b"\n") and len(record) > 10
    with path.open("r+b") as f:
        f.truncate(intact + len(record) // 2)
    return intact, path.stat().st_size


def test_torn_tail_breaks_optuna_without_the_repair(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    _journal(journal)
    _tear(journal)
    study = optuna.load_study(study_name="f", storage=_storage(journal))
    with pytest.raises(AttributeError):  # the new record continues the torn line and is never read back
        study.ask()


def test_repair_truncates_to_the_last_complete_record_and_backs_up(tmp_path: Path, caplog) -> None:
    journal = tmp_path / "optuna.journal"
    _journal(journal)
    intact, torn = _tear(journal)
    original = journal.read_bytes()
    with caplog.at_level(logging.WARNING, logger="dvt_search.rundir.journal"):
        done = repair_journal(journal)
    assert done is not None and done.dropped_bytes == torn - intact and done.kept_bytes == intact
    assert journal.stat().st_size == intact
    assert done.backup is not None and done.backup.read_bytes() == original
    assert done.backup.parent == tmp_path and done.backup.name.startswith("optuna.journal.torn-")
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(journal) in line and f"dropped its {torn - intact} byte(s)" in line

    study = optuna.load_study(study_name="f", storage=_storage(journal))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    trial = study.ask()  # resume continues: ask, tell, read back
    study.tell(trial, 0.9)
    again = optuna.load_study(study_name="f", storage=_storage(journal))
    assert len(again.trials) == 4 and again.best_value == pytest.approx(0.9)


def test_intact_journal_is_left_alone(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    size = _journal(journal)
    assert complete_size(journal) == size
    assert repair_journal(journal) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.journal"]  # no backup, no lock left
    assert repair_journal(tmp_path / "missing.journal") is None


def test_a_whole_line_that_is_no_record_is_dropped_too(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    size = _journal(journal)
    with journal.open("ab") as f:
        f.write(b'{"op_code": 5, "worker_id"\n')  # newline written, JSON cut
    assert complete_size(journal) == size
    assert repair_journal(journal, backup=False).backup is None
    assert journal.stat().st_size == size
