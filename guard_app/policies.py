"""Policies on the server: which one a request means, and one run of both guards under it.

Every way in (the page, /moderate, /v1/moderations, the MCP `moderate` tool) names a policy the
same way, a saved name (`no-s1`, `no-s1@2`) or a whole policy object, or names none and gets the
server's default policy (`python app.py --policy NAME|FILE`), or, with no default, its loose
settings (excluded codes, threshold) as an unrecorded policy. Then `moderate` runs one GPU call
with the policy's settings and adds the policy's decision beside the model's answer
(guard.core.policy). No gradio here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.core.categories import Family
from guard.core.errors import GuardError
from guard.core.policy import InvalidPolicy, Policy, ad_hoc, read_policy_file
from guard.core.verdict import DEFAULT_THRESHOLD
from guard_app import gpu


class PolicyRefused(GuardError):
    """A request names a policy that cannot be used here, or mixes one with loose settings."""


def load_default(spec: str | None, store: Any) -> Policy | None:
    """`--policy NAME|FILE` of `python app.py`: a file, else a name saved in the store."""
    if not spec:
        return None
    path = Path(spec)
    if path.is_file() or spec.endswith(".json"):
        return read_policy_file(path)
    if store is None:
        raise PolicyRefused(f"--policy {spec}: no such file, and the labels database is off "
                            "(--no-labels), so no saved policy can be read. Pass a policy file.")
    from labels import policies
    from labels.errors import LabelsError

    try:
        return policies.get(store, spec)
    except LabelsError as exc:
        raise PolicyRefused(f"--policy {spec}: {exc}") from None


@dataclass(frozen=True)
class PolicyBook:
    """The policies a server can enforce: those saved in its store, inline ones, its default."""

    store: Any  # labels.Store or None
    family: Family
    default: Policy | None = None
    threshold: float = DEFAULT_THRESHOLD  # the server's threshold when no policy is named

    def names(self) -> list[str]:
        """name@latest of every saved policy of this family (for the page's pickers)."""
        if self.store is None:
            return []
        from labels import policies

        found = []
        for summary in policies.list_policies(self.store):
            try:
                policy = policies.get(self.store, summary.label)
            except GuardError:
                continue
            if policy.family == self.family:
                found.append(summary.label)
        return found

    def resolve(self, value: Any, *, excluded: Sequence[str] = (),
                threshold: float | None = None, preprocessing: str | None = None,
                custom: Sequence[Any] = ()) -> Policy:
        """The policy `value` names (a name, NAME@VERSION, an object or its JSON text); with no
        value, the default policy, or the loose settings as an unrecorded one."""
        loose = bool(excluded) or threshold is not None
        if value in (None, "", {}):
            if self.default is not None and not loose and not custom:
                return self.default
            return ad_hoc(tuple(excluded), self.threshold if threshold is None else threshold,
                          self.family, tuple(custom), preprocessing or "none")
        if loose:
            raise PolicyRefused("Name a policy or give excluded categories and a threshold, "
                                "not both: the policy sets them. Leave them out, or save a "
                                "policy that says what you want.")
        policy = self._lookup(value)
        policy.check_family(self.family)
        return policy

    def _lookup(self, value: Any) -> Policy:
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidPolicy(f"The policy is not valid JSON ({exc.msg}). Send a saved "
                                    "policy's name or a policy object.") from None
        if isinstance(value, Mapping):
            return Policy.from_json(dict(value), source="The request's policy")
        if not isinstance(value, str):
            raise PolicyRefused("`policy` must be a saved policy's name (e.g. \"no-s1\" or "
                                "\"no-s1@2\") or a policy object.")
        if self.store is None:
            raise PolicyRefused(f"No saved policies on this server (the labels database is "
                                f"off), so '{value}' cannot be found. Send the policy object.")
        from labels import policies
        from labels.errors import LabelsError

        try:
            return policies.get(self.store, value.strip())
        except LabelsError as exc:
            raise PolicyRefused(str(exc)) from None

    def save(self, policy: Policy, *, by: str = "") -> Any:
        """Save a policy (the page's "Save as policy"): a labels.policies.SavedPolicy."""
        if self.store is None:
            raise PolicyRefused("Saving a policy needs the labels database, which is off on "
                                "this server.")
        from labels import policies

        policy.check_family(self.family)
        return policies.save(self.store, policy, by=by)


def moderate(slot: int, conversation: gpu.Plain, policy: Policy, *,
             prompt_guard_choices: Any = None, prompt_guard: str | None = None
             ) -> dict[str, Any]:
    """Both guards under `policy`, one GPU call: the classify JSON plus `policy`,
    `model_answer` and `decision`. `prompt_guard` (a page choice) wins over the policy's
    Prompt Guard model only for an unrecorded policy."""
    use_pg, key = True, prompt_guard
    if not policy.ad_hoc:
        use_pg = policy.prompt_guard.model != "none"
        sources = getattr(prompt_guard_choices, "sources", {})
        key = policy.prompt_guard.model if policy.prompt_guard.model in sources else None
    result = gpu.moderate(slot, conversation, list(policy.excluded), policy.threshold,
                          policy.custom_json, prompt_guard=key, use_prompt_guard=use_pg,
                          pg_preprocessing=policy.prompt_guard.preprocessing)
    return policy.apply(result)
