"""Snapshots of the label database, pushed to a private Hub dataset (or a folder), restored at start.

The live database stays on a local disk: a bucket mount gives SQLite no file locks for its WAL.
A snapshot is taken with SQLite's online backup API (one consistent state, read through the WAL
while writers carry on), checked with `PRAGMA integrity_check`, and pushed only when it differs
from the last one pushed. At start-up, `restore_if_missing` brings the snapshot back when there
is no local database, and never touches one that exists.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Protocol

from labels.errors import LabelsError

SNAPSHOT = "guard_lab.db"
PREVIOUS = "guard_lab.prev.db"
DEFAULT_EVERY_MIN = 15
REPO_VAR, EVERY_VAR = "GUARD_LAB_BACKUP_REPO", "GUARD_LAB_BACKUP_EVERY"
REPO_EXAMPLE = f"{REPO_VAR}=your-name/guard-lab-labels (or file:/mnt/bucket/guard-lab)"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_TABLES = ("examples", "labels")  # a file without them is not a Guard Lab database

log = logging.getLogger(__name__)


class BackupError(LabelsError):
    """A snapshot could not be made, pushed or fetched."""


class CorruptSnapshot(BackupError):
    """A snapshot failed SQLite's integrity check or is not a Guard Lab database."""


class Target(Protocol):
    """Where snapshots go: `put` stores one as SNAPSHOT, `fetch` copies one by name to dest."""

    def put(self, snapshot: Path) -> None: ...

    def fetch(self, name: str, dest: Path) -> bool: ...


class FolderTarget:
    """A folder standing in for the repository (tests, or a mounted bucket).

    The folder must exist: a missing mount point is an error, not an empty backup. Each put
    copies the last snapshot to PREVIOUS, then renames the new one in from a temporary file, so
    a reader always finds a complete SNAPSHOT.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FolderTarget({str(self.path)!r})"

    def __str__(self) -> str:
        return f"folder {self.path}"

    def _require_folder(self) -> None:
        if not self.path.is_dir():
            raise BackupError(f"The backup folder {self.path} does not exist; create or mount it, "
                              f"or point {REPO_VAR} elsewhere.")

    def put(self, snapshot: Path) -> None:
        self._require_folder()
        latest = self.path / SNAPSHOT
        if latest.exists():
            self._write(latest, PREVIOUS)
        self._write(snapshot, SNAPSHOT)

    def _write(self, src: Path, name: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path)

    def fetch(self, name: str, dest: Path) -> bool:
        self._require_folder()
        try:
            shutil.copyfile(self.path / name, dest)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise BackupError(f"Could not read {self.path / name}: {exc}.") from None
        return True


class HubTarget:
    """A private dataset repository on the Hugging Face Hub.

    Only SNAPSHOT is written: the repository's commit history already keeps every earlier
    snapshot. The token stays in memory and is passed to huggingface_hub, nowhere else.
    """

    def __init__(self, repo_id: str, token: str | None = None):
        self.repo_id = repo_id
        self._token = token
        self._ready = False

    def __repr__(self) -> str:
        return f"HubTarget({self.repo_id!r})"

    def __str__(self) -> str:
        return f"Hub dataset {self.repo_id}"

    def put(self, snapshot: Path) -> None:
        from huggingface_hub import HfApi

        api = HfApi(token=self._token)
        if not self._ready:
            api.create_repo(self.repo_id, repo_type="dataset", private=True, exist_ok=True)
            # exist_ok keeps an existing repository as it is, public included.
            if api.repo_info(self.repo_id, repo_type="dataset").private is not True:
                raise BackupError(
                    f"The dataset {self.repo_id} is public, so the labels would be published; "
                    f"make it private in its settings on the Hub, or set {REPO_VAR} to a new name.")
            self._ready = True
        api.upload_file(path_or_fileobj=str(snapshot), path_in_repo=SNAPSHOT,
                        repo_id=self.repo_id, repo_type="dataset",
                        commit_message="Snapshot of the Guard Lab labels")

    def fetch(self, name: str, dest: Path) -> bool:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".hub-") as folder:
            try:
                path = hf_hub_download(self.repo_id, name, repo_type="dataset",
                                       token=self._token, local_dir=folder)
            except LocalEntryNotFoundError:  # offline: says nothing about what the Hub holds
                raise BackupError(
                    f"Could not reach the Hub to read {self.repo_id}; check the network, or "
                    f"unset {REPO_VAR} to start without backups.") from None
            except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
                return False
            except (HfHubHTTPError, OSError) as exc:
                raise BackupError(f"Could not read {name} from {self.repo_id}: "
                                  f"{_one_line(exc)}") from None
            os.replace(path, dest)
        return True


def snapshot(db_path: str | Path, dest_path: str | Path) -> Path:
    """Copy the live database to dest_path with the online backup API and check the copy.

    The copy uses a rollback journal, so it is one self-contained file. Raises BackupError when
    there is no database, CorruptSnapshot when the copy fails its integrity check.
    """
    db_path, dest_path = Path(db_path), Path(dest_path)
    if not db_path.is_file():
        raise BackupError(f"No database at {db_path} to back up; start the app once to create it.")
    fd, name = tempfile.mkstemp(dir=dest_path.parent, prefix=f".{dest_path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        # mode=rw: a database that vanished is an error, never a new empty file.
        with closing(sqlite3.connect(db_path.resolve().as_uri() + "?mode=rw", uri=True,
                                     timeout=30)) as src, closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)  # pages=-1: one step, one read transaction, one consistent state
            dst.execute("PRAGMA journal_mode = DELETE")
        check_snapshot(tmp)
        os.replace(tmp, dest_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest_path


def check_snapshot(path: str | Path) -> None:
    """Raise CorruptSnapshot unless path passes `PRAGMA integrity_check` and has our tables."""
    path = Path(path)
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True)) as conn:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise CorruptSnapshot(f"{path.name} is not a readable SQLite database ({exc})") from None
    if problems != ["ok"]:
        raise CorruptSnapshot(f"{path.name} failed SQLite's integrity check: "
                              + "; ".join(problems[:3]))
    if not set(_TABLES) <= tables:
        raise CorruptSnapshot(f"{path.name} is not a Guard Lab database (no examples and labels "
                              "tables)")


def _db_files(db_path: Path) -> list[Path]:
    return [db_path] + [db_path.with_name(db_path.name + s) for s in ("-wal", "-shm", "-journal")]


def restore_if_missing(db_path: str | Path, target: Target) -> bool:
    """Bring back the last good snapshot when there is no local database; True if it did.

    Any local file of the database (even a lone -wal) means no restore. A snapshot that fails
    its check is refused with a logged message and PREVIOUS is tried; when neither is good the
    app starts with an empty database. A target that cannot be read raises BackupError: an
    empty start would let the next push replace a good backup.
    """
    db_path = Path(db_path)
    present = [p for p in _db_files(db_path) if p.exists()]
    if present:
        if not db_path.exists():
            log.error("Not restoring %s from %s: %s is there without its database; move it "
                      "away and restart to restore.", db_path, target, present[0].name)
        return False
    db_path.parent.mkdir(parents=True, exist_ok=True)
    refused = False
    with tempfile.TemporaryDirectory(dir=db_path.parent, prefix=".guard_lab-restore-") as folder:
        for name in (SNAPSHOT, PREVIOUS):
            copy = Path(folder) / name
            if not target.fetch(name, copy):
                continue
            try:
                check_snapshot(copy)
            except CorruptSnapshot as exc:
                log.error("Refused the backup in %s: %s; it was not restored.", target, exc)
                refused = True
                continue
            if not _place(copy, db_path):
                return False
            log.warning("Restored the labels database %s from %s (%s).", db_path, target, name)
            return True
    if refused:
        log.error("No usable backup in %s: starting with an empty database at %s.",
                  target, db_path)
    return False


def _place(src: Path, db_path: Path) -> bool:
    """Move src to db_path unless a database appeared there meanwhile."""
    try:
        os.link(src, db_path)  # fails when db_path exists: never overwrites
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem
        if db_path.exists():
            return False
        os.replace(src, db_path)
    _fsync_dir(db_path.parent)
    return True


class Backups:
    """Pushes a snapshot every `every_s` seconds when the database changed, and at stop.

    Change detection: the SHA-256 of the snapshot file, compared with the last one pushed. The
    backup API copies pages as they are, so the same content gives the same bytes; the hash is
    exact, needs no schema knowledge (timestamps would miss tables without them) and works
    across connections and processes (PRAGMA data_version is per connection). It costs one
    read of the database per interval, small for a label store. The first push after start
    always uploads.
    """

    def __init__(self, db_path: str | Path, target: Target, *,
                 every_s: float = DEFAULT_EVERY_MIN * 60):
        if every_s <= 0:
            raise ValueError(f"every_s must be above 0 seconds, e.g. {DEFAULT_EVERY_MIN * 60}.")
        self.db_path = Path(db_path)
        self.target = target
        self.every_s = every_s
        _refuse_live_folder(self.db_path, target)
        self._last: str | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def restore_if_missing(self) -> bool:
        """See the module function; call before the Store opens the database."""
        return restore_if_missing(self.db_path, self.target)

    def push_now(self) -> bool:
        """Snapshot and push if the database changed since the last push; True if it pushed."""
        with self._lock, tempfile.TemporaryDirectory(
                dir=self.db_path.parent, prefix=".guard_lab-snapshot-") as folder:
            copy = snapshot(self.db_path, Path(folder) / SNAPSHOT)
            with open(copy, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if digest == self._last:
                return False
            self.target.put(copy)
            self._last = digest
            return True

    def start(self) -> None:
        """Push on the interval from a daemon thread, and once more at interpreter exit."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="guard-lab-backups", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self, *, push: bool = True) -> None:
        """End the thread, then push a last time if the database changed (and push is True)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        atexit.unregister(self.stop)
        self._stopping.set()
        thread.join()
        if push:
            self._push_logged()

    def _run(self) -> None:
        while not self._stopping.wait(self.every_s):
            self._push_logged()

    def _push_logged(self) -> bool:
        try:
            return self.push_now()
        except Exception as exc:  # a failed push must never stop the app: one line, retry later
            log.warning("Backup to %s failed, retrying in %s: %s", self.target,
                        _duration(self.every_s), _one_line(exc))
            return False


def from_environ(db_path: str | Path,
                 environ: Mapping[str, str] = os.environ) -> Backups | None:
    """Backups from GUARD_LAB_BACKUP_REPO and GUARD_LAB_BACKUP_EVERY; None when backups are off.

    The repository is a Hub dataset id (needs HF_TOKEN with write access), or `file:/folder`
    or an absolute path for a FolderTarget. Bad values raise ValueError saying what to set.
    """
    repo = environ.get(REPO_VAR, "").strip()
    every = environ.get(EVERY_VAR, "").strip()
    if not repo:
        if every:
            raise ValueError(f"{EVERY_VAR} is set but {REPO_VAR} is not, so nothing would be "
                             f"backed up; set {REPO_EXAMPLE}, or remove {EVERY_VAR}.")
        return None
    if not every:
        minutes = DEFAULT_EVERY_MIN
    elif every.isdigit() and int(every) >= 1:
        minutes = int(every)
    else:
        raise ValueError(f"{EVERY_VAR} must be a whole number of minutes, 1 or more, "
                         f"e.g. {EVERY_VAR}={DEFAULT_EVERY_MIN}; got {every!r}.")
    target: Target
    folder = repo.removeprefix("file:") if repo.startswith(("file:", "/")) else None
    if folder is not None:
        if not Path(folder).is_absolute():
            raise ValueError(f"{REPO_VAR} must name an absolute folder after file:, e.g. "
                             f"{REPO_VAR}=file:/mnt/bucket/guard-lab; got {repo!r}.")
        target = FolderTarget(folder)
        try:
            _refuse_live_folder(Path(db_path), target)
        except ValueError as exc:
            raise ValueError(f"{REPO_VAR}: {exc}") from None
    else:
        if not _REPO_ID.fullmatch(repo):
            raise ValueError(f"{REPO_VAR} must be a Hub dataset id, owner/name, e.g. "
                             f"{REPO_EXAMPLE}; got {repo!r}.")
        token = environ.get("HF_TOKEN", "").strip()
        if not token:
            raise ValueError(f"{REPO_VAR}={repo} needs HF_TOKEN, a Hugging Face token with write "
                             "access (on a Space: add it as a secret named HF_TOKEN).")
        target = HubTarget(repo, token)
    return Backups(db_path, target, every_s=minutes * 60)


def _refuse_live_folder(db_path: Path, target: Target) -> None:
    if isinstance(target, FolderTarget) and (
            target.path.resolve() == db_path.parent.resolve()):
        raise ValueError(f"The backup folder {target.path} holds the live database; pick another "
                         f"folder, e.g. file:{db_path.parent.resolve() / 'backups'}.")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def vanishing_labels_warning(db_path: str | Path | None, environ: Mapping[str, str] = os.environ,
                             bucket_dir: str | Path = "/data") -> str:
    """On a Space, the words for the banner when labels would vanish at the next restart: the
    database is not on a mounted Storage Bucket and no backup is configured. "" otherwise
    (labels off, a local machine, a bucket, or backups)."""
    if db_path is None or not environ.get("SPACE_ID") or environ.get(REPO_VAR, "").strip():
        return ""
    bucket = Path(bucket_dir)
    if Path(db_path).resolve().is_relative_to(bucket.resolve()) and bucket.is_dir():
        return ""
    return (f"Labels saved here vanish when this Space restarts: {Path(db_path).name} is on the "
            f"Space's own disk. Attach a Storage Bucket as a volume at {bucket} (Space settings), "
            f"or set {REPO_VAR} to a dataset repository for backups.")
