"""Snapshots with the online backup API, pushes on change, restore at start, settings."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from test_labels_helpers import counts, example, image, integrity, label

from labels import Store
from labels.backup import (
    PREVIOUS,
    SNAPSHOT,
    BackupError,
    Backups,
    CorruptSnapshot,
    FolderTarget,
    HubTarget,
    check_snapshot,
    from_environ,
    restore_if_missing,
    snapshot,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "live" / "guard_lab.db"


@pytest.fixture
def remote(tmp_path: Path) -> FolderTarget:
    folder = tmp_path / "remote"
    folder.mkdir()
    return FolderTarget(folder)


def save_some(db_path: Path, n: int = 3) -> None:
    with Store(db_path) as store:
        store.save_example(example("picture", (image((200, 10, 10)),)), label(note="with image"))
        for i in range(1, n):
            store.save_example(example(f"text {i}"), label("bob", "safe", ()))


def contents(db_path: Path) -> list[tuple]:
    with Store(db_path) as store:
        return [(e.id, e.content_hash, e.messages, e.images, e.labels)
                for e in store.iter_examples()]


def remove_db(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)


def wait_for(condition, timeout_s: float = 120.0) -> None:
    """Until `condition()` holds; the ceiling is generous enough for a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)


# Snapshots

def test_snapshot_reads_rows_still_in_the_wal(db_path, tmp_path):
    with Store(db_path) as store:
        for i in range(5):
            store.save_example(example(f"text {i}"), label())
        # Not checkpointed yet: a raw copy of the main file would miss these rows.
        assert db_path.with_name(db_path.name + "-wal").stat().st_size > 0
        dest = snapshot(db_path, tmp_path / "copy.db")
    assert counts(dest)["examples"] == 5
    assert integrity(dest) == "ok"
    with sqlite3.connect(dest) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "live"]


def test_snapshot_while_another_thread_writes(db_path, tmp_path):
    committed: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    with Store(db_path) as store:
        def write() -> None:
            try:
                i = 0
                while not stop.is_set():
                    committed.append(store.save_example(example(f"m {i}"), label()).example_id)
                    i += 1
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            results = []
            for n in range(3):
                wait_for(lambda n=n: len(committed) >= 20 * (n + 1))
                before = set(committed)
                dest = snapshot(db_path, tmp_path / f"snap{n}.db")
                results.append((before, dest))
        finally:
            stop.set()
            writer.join()
    assert errors == []
    for before, dest in results:
        assert integrity(dest) == "ok"
        with sqlite3.connect(dest) as conn:
            ids = {r[0] for r in conn.execute("SELECT id FROM examples")}
        assert before <= ids <= set(committed)
        n = counts(dest)
        # Each save is one transaction: a snapshot never holds half of one.
        assert n["examples"] == n["labels"] == n["label_events"] == len(ids)


def test_snapshot_of_a_missing_database_creates_nothing(db_path, tmp_path):
    with pytest.raises(BackupError, match="No database at"):
        snapshot(db_path, tmp_path / "copy.db")
    assert not db_path.exists() and not (tmp_path / "copy.db").exists()


# Restore

def test_restore_when_missing_gives_back_the_examples(db_path, remote):
    save_some(db_path)
    before = contents(db_path)
    assert Backups(db_path, remote).push_now() is True
    remove_db(db_path)
    assert restore_if_missing(db_path, remote) is True
    assert [p.name for p in db_path.parent.iterdir()] == [db_path.name]  # no temp files left
    assert integrity(db_path) == "ok"
    assert contents(db_path) == before


def test_restore_never_replaces_a_local_database(db_path, remote):
    save_some(db_path, 1)
    Backups(db_path, remote).push_now()
    save_some(db_path, 4)  # newer than the backup
    local = db_path.read_bytes()
    assert restore_if_missing(db_path, remote) is False
    assert db_path.read_bytes() == local
    assert counts(db_path)["examples"] == 4


def test_restore_skips_a_lone_wal_file(db_path, remote, caplog):
    save_some(db_path)
    Backups(db_path, remote).push_now()
    remove_db(db_path)
    # SQLite would replay a stray WAL into whatever file it finds: never restore beside one.
    db_path.with_name(db_path.name + "-wal").write_bytes(b"left over")
    assert restore_if_missing(db_path, remote) is False
    assert not db_path.exists()
    assert caplog.messages == [
        f"Not restoring {db_path} from {remote}: guard_lab.db-wal is there without its database; "
        "move it away and restart to restore."]


def test_restore_with_no_backup_yet(db_path, remote):
    assert restore_if_missing(db_path, remote) is False
    assert not db_path.exists()


def test_restore_from_a_missing_folder_is_an_error(db_path, tmp_path):
    with pytest.raises(BackupError, match="does not exist; create or mount it"):
        restore_if_missing(db_path, FolderTarget(tmp_path / "not-mounted"))


def corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "index":  # edit the table's copy of an indexed value: the file still opens
        with sqlite3.connect(path) as conn:
            value = conn.execute("SELECT content_hash FROM examples").fetchone()[0].encode()
        assert data.count(value) == 2  # once in the table, once in its index
        at = data.index(value)
        data[at] = ord("0") if data[at] != ord("0") else ord("1")
    elif how == "truncated":
        del data[len(data) // 2:]
    elif how == "scribbled":
        data[4096:len(data)] = b"\xa5" * (len(data) - 4096)
    else:  # empty
        data.clear()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how, message", [
    ("index", r"failed SQLite's integrity check: row \d+ missing from index idx_examples_"),
    ("truncated", "integrity check|not a readable SQLite database"),
    ("scribbled", "integrity check|not a readable SQLite database"),
    ("empty", "not a Guard Lab database"),
])
def test_corrupt_backup_is_refused_and_the_app_starts_empty(db_path, remote, caplog, how,
                                                            message):
    save_some(db_path)
    Backups(db_path, remote).push_now()
    corrupt(remote.path / SNAPSHOT, how)
    with pytest.raises(CorruptSnapshot, match=message):
        check_snapshot(remote.path / SNAPSHOT)
    remove_db(db_path)
    with caplog.at_level(logging.ERROR, logger="labels.backup"):
        assert restore_if_missing(db_path, remote) is False
    assert not db_path.exists()
    refused, empty = caplog.messages
    assert refused.startswith(f"Refused the backup in {remote}: {SNAPSHOT} ")
    assert refused.endswith("; it was not restored.")
    assert empty == f"No usable backup in {remote}: starting with an empty database at {db_path}."
    with Store(db_path) as store:
        assert store.count_examples() == 0


def test_corrupt_latest_falls_back_to_the_previous_snapshot(db_path, remote, caplog):
    save_some(db_path, 2)
    backups = Backups(db_path, remote)
    backups.push_now()
    save_some(db_path, 3)
    backups.push_now()
    assert counts(remote.path / PREVIOUS)["examples"] == 2
    corrupt(remote.path / SNAPSHOT, "truncated")
    remove_db(db_path)
    assert restore_if_missing(db_path, remote) is True
    assert counts(db_path)["examples"] == 2
    assert "Refused the backup" in caplog.text


# Pushing

def test_push_only_after_a_change(db_path, remote):
    save_some(db_path, 1)
    backups = Backups(db_path, remote)
    assert backups.push_now() is True
    assert backups.push_now() is False
    with Store(db_path) as store:
        assert backups.push_now() is False  # opening the database changes nothing
        store.add_label(1, label("carol", "safe", ()))
    assert backups.push_now() is True
    assert backups.push_now() is False
    with sqlite3.connect(remote.path / SNAPSHOT) as conn:
        assert conn.execute("SELECT reviewer FROM labels ORDER BY id").fetchall() == [
            ("alice",), ("carol",)]
    assert counts(remote.path / PREVIOUS)["labels"] == 1
    assert sorted(p.name for p in remote.path.iterdir()) == [SNAPSHOT, PREVIOUS]


def test_scheduler_pushes_changes_and_survives_failures(db_path, tmp_path, caplog):
    save_some(db_path, 1)
    folder = tmp_path / "bucket"  # not mounted yet: pushes fail
    backups = Backups(db_path, FolderTarget(folder), every_s=0.01)
    with caplog.at_level(logging.WARNING, logger="labels.backup"):
        backups.start()
        try:
            wait_for(lambda: len(caplog.records) >= 2)  # failed twice, still running
            folder.mkdir()
            wait_for(lambda: (folder / SNAPSHOT).exists())
            with Store(db_path) as store:
                store.add_label(1, label("carol", "safe", ()))
            wait_for(lambda: counts(folder / SNAPSHOT)["labels"] == 2)
            assert counts(folder / PREVIOUS)["labels"] == 1
        finally:
            backups.stop(push=False)
    failure = caplog.records[0]
    assert failure.getMessage() == (
        f"Backup to folder {folder} failed, retrying in 0.01 s: BackupError: The backup folder "
        f"{folder} does not exist; create or mount it, or point GUARD_LAB_BACKUP_REPO elsewhere.")
    assert failure.exc_info is None


def test_stop_pushes_the_last_change(db_path, remote):
    save_some(db_path, 1)
    backups = Backups(db_path, remote, every_s=3600)
    backups.start()
    with Store(db_path) as store:
        store.add_label(1, label("carol", "safe", ()))
    backups.stop()
    assert counts(remote.path / SNAPSHOT)["labels"] == 2
    backups.stop()  # twice is fine


def test_a_corrupt_database_is_never_pushed(db_path, remote):
    save_some(db_path)
    Backups(db_path, remote).push_now()
    good = (remote.path / SNAPSHOT).read_bytes()
    corrupt(db_path, "index")
    with pytest.raises(CorruptSnapshot, match="failed SQLite's integrity check"):
        Backups(db_path, remote).push_now()
    assert (remote.path / SNAPSHOT).read_bytes() == good
    assert not (remote.path / PREVIOUS).exists()


def test_backup_folder_cannot_be_the_live_database_folder(db_path):
    with pytest.raises(ValueError, match="holds the live database; pick another folder"):
        Backups(db_path, FolderTarget(db_path.parent))


# Settings

def test_from_environ(db_path):
    assert from_environ(db_path, {}) is None
    folder = from_environ(db_path, {"GUARD_LAB_BACKUP_REPO": "file:/mnt/bucket/guard"})
    assert (repr(folder.target), folder.every_s) == ("FolderTarget('/mnt/bucket/guard')", 900)
    plain = from_environ(db_path, {"GUARD_LAB_BACKUP_REPO": "/mnt/b",
                                   "GUARD_LAB_BACKUP_EVERY": " 5 "})
    assert (plain.target.path, plain.every_s) == (Path("/mnt/b"), 300)
    hub = from_environ(db_path, {"GUARD_LAB_BACKUP_REPO": "me/guard-lab.labels",
                                 "HF_TOKEN": "hf_secret"})
    assert isinstance(hub.target, HubTarget) and hub.target.repo_id == "me/guard-lab.labels"
    assert "hf_secret" not in repr(hub.target) + str(hub.target)


@pytest.mark.parametrize("environ, message", [
    ({"GUARD_LAB_BACKUP_REPO": "guard-lab-labels", "HF_TOKEN": "t"},
     "GUARD_LAB_BACKUP_REPO must be a Hub dataset id, owner/name, e.g. "
     "GUARD_LAB_BACKUP_REPO=your-name/guard-lab-labels"),
    ({"GUARD_LAB_BACKUP_REPO": "https://huggingface.co/datasets/me/x", "HF_TOKEN": "t"},
     "must be a Hub dataset id"),
    ({"GUARD_LAB_BACKUP_REPO": "file:backups"}, "absolute folder after file:, e.g. "),
    ({"GUARD_LAB_BACKUP_REPO": "me/labels"}, "needs HF_TOKEN, a Hugging Face token with write"),
    ({"GUARD_LAB_BACKUP_REPO": "/b", "GUARD_LAB_BACKUP_EVERY": "0"},
     "GUARD_LAB_BACKUP_EVERY must be a whole number of minutes, 1 or more, "
     "e.g. GUARD_LAB_BACKUP_EVERY=15; got '0'"),
    ({"GUARD_LAB_BACKUP_REPO": "/b", "GUARD_LAB_BACKUP_EVERY": "1.5"}, "got '1.5'"),
    ({"GUARD_LAB_BACKUP_REPO": "/b", "GUARD_LAB_BACKUP_EVERY": "-3"}, "got '-3'"),
    ({"GUARD_LAB_BACKUP_EVERY": "15"},
     "GUARD_LAB_BACKUP_EVERY is set but GUARD_LAB_BACKUP_REPO is not"),
])
def test_from_environ_rejects_bad_values(db_path, environ, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("?", r"\?")):
        from_environ(db_path, environ)


def test_from_environ_refuses_the_database_folder(db_path):
    with pytest.raises(ValueError, match="GUARD_LAB_BACKUP_REPO: The backup folder .* holds the "
                                         "live database"):
        from_environ(db_path, {"GUARD_LAB_BACKUP_REPO": f"file:{db_path.parent}"})


# HubTarget, with the huggingface_hub calls replaced (no network)

@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import HfApi

    calls: list[tuple] = []
    state = {"private": True, "files": {}}

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs, self.token))

    def repo_info(self, repo_id, **kwargs):
        return type("Info", (), {"private": state["private"]})()

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, **kwargs):
        calls.append(("upload_file", repo_id, path_in_repo, kwargs["repo_type"]))
        state["files"][path_in_repo] = Path(path_or_fileobj).read_bytes()

    def hf_hub_download(repo_id, filename, *, local_dir, token, repo_type):
        calls.append(("download", repo_id, filename, repo_type, token))
        if "error" in state:
            raise state["error"]
        if filename not in state["files"]:
            from huggingface_hub.errors import EntryNotFoundError
            raise EntryNotFoundError(f"{filename} not found")
        out = Path(local_dir) / filename
        out.write_bytes(state["files"][filename])
        return str(out)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(HfApi, "upload_file", upload_file)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls, state


def test_hub_target_round_trip(hub, db_path):
    calls, _ = hub
    save_some(db_path)
    before = contents(db_path)
    backups = Backups(db_path, HubTarget("me/labels", "hf_secret"))
    backups.push_now()
    with Store(db_path) as store:
        store.add_label(2, label("carol", "unsafe", ("S1",)))
    backups.push_now()
    assert calls == [
        ("create_repo", "me/labels", {"repo_type": "dataset", "private": True, "exist_ok": True},
         "hf_secret"),
        ("upload_file", "me/labels", SNAPSHOT, "dataset"),
        ("upload_file", "me/labels", SNAPSHOT, "dataset")]
    remove_db(db_path)
    assert backups.restore_if_missing() is True
    assert calls[-1] == ("download", "me/labels", SNAPSHOT, "dataset", "hf_secret")
    after = contents(db_path)
    assert after[0] == before[0] and len(after[1][4]) == 2


def test_hub_target_with_no_snapshot_yet(hub, db_path):
    calls, _ = hub
    assert restore_if_missing(db_path, HubTarget("me/labels", "t")) is False
    assert [c[2] for c in calls] == [SNAPSHOT, PREVIOUS]


def test_hub_target_refuses_a_public_repository(hub, db_path):
    calls, state = hub
    state["private"] = False
    save_some(db_path, 1)
    with pytest.raises(BackupError, match="is public, so the labels would be published"):
        Backups(db_path, HubTarget("me/labels", "t")).push_now()
    assert [c[0] for c in calls] == ["create_repo"]


def test_hub_target_offline_is_an_error_not_an_empty_backup(hub, db_path):
    from huggingface_hub.errors import LocalEntryNotFoundError

    _, state = hub
    state["error"] = LocalEntryNotFoundError("cannot reach the Hub")
    with pytest.raises(BackupError, match="Could not reach the Hub to read me/labels"):
        restore_if_missing(db_path, HubTarget("me/labels", "t"))
    assert not db_path.exists()
