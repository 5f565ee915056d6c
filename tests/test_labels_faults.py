"""The label store notices faults of its file: gone, replaced, damaged, full, read-only.

Issue 20, rows 10 to 12: writes went on into a deleted file (lost at the next start), a damaged
database took the app down with a traceback, and a full disk reached the reviewer as "Something
went wrong". Real SQLite files throughout; a full disk is SQLite's own SQLITE_FULL (its page
limit reached), a read-only one its own SQLITE_READONLY.
"""

from __future__ import annotations

import errno
import os
import shutil

import pytest
from test_labels_helpers import counts, example, label

from labels import Store
from labels.store import CorruptDatabase, DatabaseFault


def test_a_deleted_database_refuses_writes(store, db_path):
    store.save_example(example("first"), label())
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{db_path}{suffix}")
    with pytest.raises(DatabaseFault) as refused:
        store.save_example(example("second"), label())
    assert str(refused.value) == (
        "The labels database labels.db was deleted or moved while the app was running, so "
        "nothing was saved (a save now would be lost). Restart the app to open what is there "
        "now (a missing file is restored from the backup, when backups are on).")
    assert str(db_path.parent) not in str(refused.value)  # the file's name, not the server path
    assert not db_path.exists()


def test_a_replaced_database_refuses_writes_and_is_left_alone(store, db_path, tmp_path):
    store.save_example(example("first"), label())
    with Store(tmp_path / "other.db") as other:
        other.save_example(example("theirs"), label("bob"))
    before = counts(tmp_path / "other.db")
    os.replace(tmp_path / "other.db", db_path)
    with pytest.raises(DatabaseFault, match="was replaced by another file while the app was "
                                            "running, so nothing was saved"):
        store.add_label(1, label("carol"))
    assert counts(db_path) == before


def test_a_moved_database_is_noticed_too(store, db_path, tmp_path):
    shutil.move(db_path, tmp_path / "moved.db")
    with pytest.raises(DatabaseFault, match="deleted or moved"):
        store.save_example(example(), label())


def test_a_damaged_file_is_named_with_the_problem_and_how_to_restore(db_path):
    db_path.write_bytes(b"this is not a database, just a file of text" * 100)
    with pytest.raises(CorruptDatabase) as refused:
        Store(db_path)
    message = str(refused.value)
    assert "\n" not in message and refused.value.problem == "file is not a database"
    assert message.startswith(f"The labels database {db_path} is damaged: file is not a "
                              "database. To restore it, stop the app, move labels.db")
    assert "GUARD_LAB_BACKUP_REPO" in message and "--no-labels" in message


def test_damage_past_the_header_is_found_by_the_start_up_check(db_path):
    with Store(db_path) as store:
        for i in range(300):
            store.save_example(example(f"example {i} " + "x" * 400), label())
    data = bytearray(db_path.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    data[10 * page:14 * page] = b"\xa5" * (4 * page)  # four pages of a table, overwritten
    db_path.write_bytes(bytes(data))
    with Store(db_path) as store, pytest.raises(CorruptDatabase, match="is damaged: "):
        store.check_integrity()


def test_a_full_disk_is_a_plain_refusal_and_saving_works_again_after(store, db_path):
    store.save_example(example("first"), label())
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page
    with pytest.raises(DatabaseFault) as refused:
        store.save_example(example("second " + "y" * 20000), label())
    assert str(refused.value) == (
        "The labels database labels.db is on a full disk, so nothing was saved. Free some space "
        "on the server, then try again (what was saved before is safe).")
    assert counts(db_path)["examples"] == 1
    store.db.execute(f"PRAGMA max_page_count = {pages + 1000}")  # space freed
    store.save_example(example("second " + "y" * 20000), label())
    assert counts(db_path)["examples"] == 2


def test_a_read_only_database_is_a_plain_refusal(store, db_path):
    store.save_example(example("first"), label())
    if os.geteuid() == 0:  # root writes through file modes: use SQLite's own read-only switch
        store.db.execute("PRAGMA query_only = 1")
    else:
        db_path.chmod(0o444)
    with pytest.raises(DatabaseFault, match="is read-only on this server, so nothing was saved. "
                                            "Make the file and its folder writable for the app"):
        store.add_label(1, label("bob"))
    assert counts(db_path)["labels"] == 1


def test_the_app_edge_shows_the_refusals_not_something_went_wrong(store, db_path):
    import gradio as gr

    from guard_app.guarded import DISK_FULL, UNEXPECTED, guarded

    os.remove(db_path)
    with pytest.raises(gr.Error) as shown:
        guarded(lambda: store.save_example(example(), label()))()
    assert "was deleted or moved" in shown.value.message and UNEXPECTED not in shown.value.message

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(gr.Error) as shown:
        guarded(full_disk)()
    assert shown.value.message == DISK_FULL


def test_the_app_starts_with_labels_off_on_a_damaged_database(db_path, capsys):
    import app

    db_path.write_bytes(b"\0garbage" * 1000)
    store, banner = app.open_labels(db_path)
    assert store is None
    assert banner == {"The labels database": (
        "labels.db is damaged (file is not a database), so labelling, review queues, batch "
        "evaluation and tuning are off. The server's log says how to restore it (from the "
        "backup, when backups are on).")}
    logged = capsys.readouterr().err.splitlines()
    assert len(logged) == 1 and logged[0].startswith(
        f"error: labels are off: The labels database {db_path} is damaged")
    assert app.open_labels(None) == (None, {})


def test_a_database_that_cannot_be_opened_says_so(tmp_path):
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(DatabaseFault) as refused:
        Store(folder)
    assert str(refused.value) == (
        "The labels database a-folder.db could not be read or written (unable to open database "
        "file). Check the disk and the file, then try again.")


def test_a_surrogate_in_a_label_is_a_plain_refusal(store, db_path):
    import gradio as gr

    from guard_app.guarded import guarded

    with pytest.raises(gr.Error) as shown:
        guarded(lambda: store.save_example(example(), label("al\ud800")))()
    assert shown.value.message.startswith("Something you sent holds U+D800, a lone UTF-16 "
                                          "surrogate")
    assert counts(db_path)["labels"] == 0
