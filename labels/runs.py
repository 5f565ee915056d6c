"""Evaluation runs: a named run's settings and its per-row results, in the label database.

A run is keyed by its name. Starting a run whose name exists resumes it when every setting
matches (the rows already stored are not judged again) and is refused when one differs.
Each batch of results is written in one transaction, so a killed run loses at most the batch
it was working on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from labels.errors import LabelsError, NotFound
from labels.store import Store, now

RUNNING, FINISHED = "running", "finished"
# The migration from which each result keeps its attack label and window scores (labels.schema).
ATTACK_MIGRATION = "m008_eval_attack_windows"


class RunConflict(LabelsError):
    """A run of that name exists with other settings."""


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a run's results; equal settings make a run resumable."""

    name: str
    dataset: str  # the file as named when the run began
    dataset_sha256: str
    format: str
    model: str
    prompt_guard_model: str  # "" when Prompt Guard was not run
    excluded: tuple[str, ...]
    threshold: float
    policy: str = ""  # name@version of the policy that decided the verdicts; "" for none

    def differences(self, other: RunSettings) -> list[str]:
        """Settings of `other` that differ from this one, as 'what: ours vs theirs'."""
        out = []
        for f in fields(self):
            if f.name in ("name", "dataset"):
                continue  # the file may have moved; its content hash is what counts
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "excluded":
                mine, theirs = sorted(c.upper() for c in mine), sorted(c.upper() for c in theirs)
            if mine != theirs:
                label = "dataset content" if f.name == "dataset_sha256" else f.name
                out.append(f"{label} {_show(theirs)} (stored: {_show(mine)})")
        return out


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(value) or "none"
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    return str(value) if value != "" else "none"


@dataclass(frozen=True)
class EvalRun:
    id: int
    settings: RunSettings
    created_at: str
    finished_at: str | None
    status: str  # "running" (also a run that was interrupted) or "finished"
    total_rows: int
    done_rows: int

    @property
    def name(self) -> str:
        return self.settings.name


@dataclass(frozen=True)
class EvalResult:
    """One judged row. `gold` is None when the dataset has no label for it."""

    row_id: str
    position: int  # the row's place in the dataset, for output in file order
    gold: bool | None
    gold_categories: tuple[str, ...]
    verdict: str | None  # "safe" / "unsafe"; None when the row failed
    p_unsafe: float | None
    categories: tuple[str, ...]
    raw_output: str
    p_malicious: float | None  # None when Prompt Guard was not run
    error: str | None = None
    created_at: str = ""
    # Prompt Guard's ground truth, stored with the row (migration m008): the dataset's attack
    # label (None when it does not say, or the row was stored before m008) and the score of
    # each 512-token window of the prompt, whose maximum is p_malicious (() when unknown).
    attack: bool | None = None
    window_scores: tuple[float, ...] = ()

    @property
    def predicted_unsafe(self) -> bool:
        return self.verdict == "unsafe"


class Runs:
    """Evaluation runs stored beside the labels, sharing the Store's connection and lock."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    def start(self, settings: RunSettings, total_rows: int) -> tuple[EvalRun, bool]:
        """Create the run, or resume the one of that name. Returns (run, resumed)."""
        name = settings.name.strip()
        if not name:
            raise LabelsError("A run needs a name.")
        with self.store._write():
            row = self._row(name)
            if row is None:
                self.db["eval_runs"].insert({
                    "name": name, "dataset": settings.dataset,
                    "dataset_sha256": settings.dataset_sha256, "format": settings.format,
                    "model": settings.model, "prompt_guard_model": settings.prompt_guard_model,
                    "excluded": json.dumps(list(settings.excluded)),
                    "threshold": settings.threshold, "created_at": now(), "finished_at": None,
                    "status": RUNNING, "total_rows": total_rows,
                    "policy": settings.policy or None})
                resumed = False
            else:
                differences = _settings(row).differences(settings)
                if differences:
                    raise RunConflict(
                        f"Run '{name}' exists with other settings: {'; '.join(differences)}. "
                        "Give this run another name, or repeat the stored settings to resume.")
                self.db.execute(
                    "UPDATE eval_runs SET status = ?, finished_at = NULL, total_rows = ? "
                    "WHERE id = ?", [RUNNING, total_rows, row["id"]])
                resumed = True
        return self.get(name), resumed

    def done_row_ids(self, run_id: int) -> set[str]:
        with self.store._lock:
            return {r[0] for r in self.db.execute(
                "SELECT row_id FROM eval_results WHERE run_id = ?", [run_id])}

    def save_results(self, run_id: int, results: Iterable[EvalResult]) -> None:
        """One transaction. A row stored already (a second process on the same run) is replaced."""
        at = now()
        rows = [_result_row(run_id, r, at) for r in results]
        with self.store._write():
            self.db["eval_results"].insert_all(rows, replace=True)

    def finish(self, run_id: int) -> EvalRun:
        with self.store._write():
            self.db.execute("UPDATE eval_runs SET status = ?, finished_at = ? WHERE id = ?",
                            [FINISHED, now(), run_id])
        return self._by_id(run_id)

    def get(self, name: str) -> EvalRun:
        with self.store._lock:
            row = self._row(name)
        if row is None:
            known = ", ".join(r.name for r in self.list()) or "none yet"
            raise NotFound(f"No evaluation run named '{name}' (runs: {known}).")
        return self._run(row)

    def list(self) -> list[EvalRun]:
        with self.store._lock:
            rows = list(self.db.query("SELECT * FROM eval_runs ORDER BY id"))
        return [self._run(r) for r in rows]

    def results(self, run_id: int) -> list[EvalResult]:
        """Every stored result, in dataset order."""
        with self.store._lock:
            rows = list(self.db.query(
                "SELECT * FROM eval_results WHERE run_id = ? ORDER BY position, row_id", [run_id]))
        return [_result(r) for r in rows]

    def stored_before_attack(self, run_id: int) -> set[str]:
        """Row ids of the run stored before migration m008, which stores each row's attack
        label and window scores: for these rows a NULL attack means "not known", so their
        labels must come from the run's dataset, read again. Empty for a run stored since."""
        with self.store._lock:
            applied = self.db.execute(
                "SELECT applied_at FROM _sqlite_migrations WHERE name = ?",
                [ATTACK_MIGRATION]).fetchone()
            rows = self.db.execute(
                "SELECT row_id, created_at FROM eval_results WHERE run_id = ? AND attack IS NULL "
                "AND window_scores IS NULL", [run_id]).fetchall()
        if applied is None or not rows:
            return set()
        since = _instant(applied[0])
        return {row_id for row_id, at in rows if _instant(at) < since}

    def delete(self, name: str) -> None:
        """Forget a run and its results (to start it again from scratch)."""
        run = self.get(name)
        with self.store._write():
            self.db.execute("DELETE FROM eval_results WHERE run_id = ?", [run.id])
            self.db.execute("DELETE FROM eval_runs WHERE id = ?", [run.id])

    def _row(self, name: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM eval_runs WHERE name = ?", [name]))
        return rows[0] if rows else None

    def _by_id(self, run_id: int) -> EvalRun:
        with self.store._lock:
            rows = list(self.db.query("SELECT * FROM eval_runs WHERE id = ?", [run_id]))
        if not rows:
            raise NotFound(f"No evaluation run {run_id}.")
        return self._run(rows[0])

    def _run(self, row: Mapping[str, Any]) -> EvalRun:
        with self.store._lock:
            done = self.db.execute("SELECT count(*) FROM eval_results WHERE run_id = ?",
                                   [row["id"]]).fetchone()[0]
        return EvalRun(id=row["id"], settings=_settings(row), created_at=row["created_at"],
                       finished_at=row["finished_at"], status=row["status"],
                       total_rows=row["total_rows"] or 0, done_rows=done)


def _settings(row: Mapping[str, Any]) -> RunSettings:
    return RunSettings(
        name=row["name"], dataset=row["dataset"], dataset_sha256=row["dataset_sha256"],
        format=row["format"], model=row["model"],
        prompt_guard_model=row["prompt_guard_model"] or "",
        excluded=tuple(json.loads(row["excluded"])), threshold=row["threshold"],
        policy=row.get("policy") or "")


def _instant(text: str) -> datetime:
    """A stored time: labels.store.now()'s ISO form or sqlite-utils' str(datetime), in UTC."""
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _result_row(run_id: int, r: EvalResult, at: str) -> dict[str, Any]:
    return {"run_id": run_id, "row_id": r.row_id, "position": r.position,
            "gold": None if r.gold is None else int(r.gold),
            "gold_categories": json.dumps(list(r.gold_categories)), "verdict": r.verdict,
            "p_unsafe": r.p_unsafe, "categories": json.dumps(list(r.categories)),
            "raw_output": r.raw_output, "p_malicious": r.p_malicious, "error": r.error,
            "created_at": at, "attack": None if r.attack is None else int(r.attack),
            "window_scores": json.dumps([float(s) for s in r.window_scores])
            if r.window_scores else None}


def _result(row: Mapping[str, Any]) -> EvalResult:
    return EvalResult(
        row_id=row["row_id"], position=row["position"],
        gold=None if row["gold"] is None else bool(row["gold"]),
        gold_categories=tuple(json.loads(row["gold_categories"] or "[]")),
        verdict=row["verdict"], p_unsafe=row["p_unsafe"],
        categories=tuple(json.loads(row["categories"] or "[]")),
        raw_output=row["raw_output"] or "", p_malicious=row["p_malicious"], error=row["error"],
        created_at=row["created_at"],
        attack=None if row.get("attack") is None else bool(row["attack"]),
        window_scores=tuple(float(s) for s in json.loads(row.get("window_scores") or "[]")))

