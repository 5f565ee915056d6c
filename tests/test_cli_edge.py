"""The one edge of the command lines: an error becomes one line on stderr and an exit status."""

import sqlite3

import pytest

from guard.cli_edge import run_command
from guard.core.errors import InvalidCategories
from labels.errors import LabelsError


def raising(exc):
    def command(*args):
        raise exc
    return command


@pytest.mark.parametrize(("exc", "options", "status", "line"), [
    (InvalidCategories("Unknown code S99."), {}, 2, "error: Unknown code S99."),
    (LabelsError("No example 7."), {"refused": (LabelsError,)}, 2, "error: No example 7."),
    (sqlite3.DatabaseError("file is not a database"), {"database": "x.db"}, 2,
     "error: cannot use the database x.db: file is not a database"),
    (KeyboardInterrupt(), {"resume": "run the same command to resume."}, 130,
     "interrupted: run the same command to resume."),
])
def test_each_error_is_one_line_and_a_status(capsys, exc, options, status, line):
    assert run_command(raising(exc), **options) == status
    out, err = capsys.readouterr()
    assert (out, err) == ("", line + "\n")


def test_what_it_is_not_told_to_catch_goes_through(capsys):
    assert run_command(lambda: 0) == 0
    with pytest.raises(LabelsError):
        run_command(raising(LabelsError("not refused here")))
    with pytest.raises(sqlite3.Error):
        run_command(raising(sqlite3.OperationalError("no database named")))
    with pytest.raises(KeyboardInterrupt):
        run_command(raising(KeyboardInterrupt()))
    assert capsys.readouterr().err == ""


def test_the_eval_and_tune_commands_name_a_broken_database(tmp_path, capsys):
    from guard.eval.cli import main as eval_main
    from guard.tune.cli import main as tune_main

    broken = tmp_path / "guard_lab.db"
    broken.write_bytes(b"not a database " * 100)
    assert eval_main(["--out", str(broken), "--compare", "a", "b"]) == 2
    assert tune_main(["check", "--db", str(broken)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]  # one line each, the same words
    assert lines[0].startswith(f"error: The labels database {broken} is damaged: file is not a "
                               "database. To restore it, stop the app, move guard_lab.db")


def test_an_interrupted_evaluation_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import guard.eval.cli as cli

    monkeypatch.setattr(cli, "_compare", raising(KeyboardInterrupt()))
    assert cli.main(["--out", str(tmp_path / "db"), "--compare", "a", "b"]) == 130
    assert capsys.readouterr().err == ("interrupted: finished batches are stored; run the same "
                                       "command to resume.\n")
