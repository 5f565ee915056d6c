"""Policies saved by name in the labels database, each save an immutable new version.

`save` gives a policy the next version of its name, unless its content (and description) is
the same as the latest version's, which it then returns. Versions are never edited or deleted
(the table refuses it: migration m006). `get("name")` is the latest version, `get("name@2")`
that one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from guard.core.policy import InvalidPolicy, Policy
from labels.errors import NotFound
from labels.store import Store, now


class PolicyNotFound(NotFound):
    """No saved policy of that name (or no such version)."""


@dataclass(frozen=True)
class SavedPolicy:
    policy: Policy  # with its version
    created_at: str
    created_by: str
    new: bool  # False: the latest version already said the same


@dataclass(frozen=True)
class PolicySummary:
    name: str
    latest: int
    versions: int
    updated_at: str
    label: str  # name@latest

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "latest": self.latest, "versions": self.versions,
                "updated_at": self.updated_at, "label": self.label}


def split_ref(ref: str) -> tuple[str, int | None]:
    """'no-s1' -> ('no-s1', None); 'no-s1@3' -> ('no-s1', 3)."""
    name, _, version = ref.strip().partition("@")
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise PolicyNotFound(f"'{ref}': the part after '@' must be a version number such as "
                             f"{name}@1.")
    return name, int(version)


def save(store: Store, policy: Policy, *, by: str = "") -> SavedPolicy:
    """Store `policy` as the next version of its name (its own `version` is ignored)."""
    body = {k: v for k, v in replace(policy, version=None).to_json().items()}
    text = json.dumps(body, sort_keys=True)
    with store._write():
        latest = _latest_row(store, policy.name)
        if latest is not None and latest["body"] == text:
            return _saved(latest, new=False)
        version = 1 if latest is None else latest["version"] + 1
        row = {"name": policy.name, "version": version, "body": text,
               "content_hash": policy.content_hash, "created_at": now(),
               "created_by": by.strip() or None}
        store.db["policies"].insert(row)
    return _saved(row, new=True)


def get(store: Store, ref: str) -> Policy:
    """The policy `ref` names: 'name' (its latest version) or 'name@version'."""
    return get_saved(store, ref).policy


def get_saved(store: Store, ref: str) -> SavedPolicy:
    name, version = split_ref(ref)
    with store._lock:
        if version is None:
            row = _latest_row(store, name)
        else:
            rows = list(store.db.query("SELECT * FROM policies WHERE name = ? AND version = ?",
                                       [name, version]))
            row = rows[0] if rows else None
    if row is None:
        known = ", ".join(s.label for s in list_policies(store)) or "none saved yet"
        what = f"version {version} of policy '{name}'" if version else f"policy '{name}'"
        raise PolicyNotFound(f"No {what} in this database (policies: {known}). Save one with "
                             "`python -m labels policy save FILE --db DB`.")
    return _saved(row, new=False)


def versions(store: Store, name: str) -> list[SavedPolicy]:
    """Every version of `name`, oldest first."""
    with store._lock:
        rows = list(store.db.query("SELECT * FROM policies WHERE name = ? ORDER BY version",
                                   [name]))
    if not rows:
        get_saved(store, name)  # raises with the known names
    return [_saved(r, new=False) for r in rows]


def list_policies(store: Store) -> list[PolicySummary]:
    with store._lock:
        rows = list(store.db.query(
            "SELECT name, max(version) AS latest, count(*) AS n, max(created_at) AS at "
            "FROM policies GROUP BY name ORDER BY name"))
    return [PolicySummary(r["name"], r["latest"], r["n"], r["at"], f"{r['name']}@{r['latest']}")
            for r in rows]


def _latest_row(store: Store, name: str) -> dict[str, Any] | None:
    rows = list(store.db.query(
        "SELECT * FROM policies WHERE name = ? ORDER BY version DESC LIMIT 1", [name]))
    return rows[0] if rows else None


def _saved(row: dict[str, Any], *, new: bool) -> SavedPolicy:
    try:
        policy = Policy.from_json({**json.loads(row["body"]), "version": row["version"]},
                                  source=f"stored policy {row['name']}@{row['version']}")
    except InvalidPolicy as exc:  # a body written by a later Guard Lab, say
        raise NotFound(f"{exc} It cannot be read by this version of Guard Lab.") from None
    return SavedPolicy(policy, row["created_at"], row.get("created_by") or "", new)
