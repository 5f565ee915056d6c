"""A policy: what a product team decided to enforce, as one named, versioned thing.

A policy file is JSON (`POLICY_SCHEMA`); every field but `name` has a default, so
`{"name": "no-s1", "family": "llama-guard-4", "excluded": ["S1"], "threshold": 0.5}` is a whole
policy. `Policy.decide` turns what the models said (the JSON of `guard.engines.service.moderate`)
into the policy's decision, kept apart from the model's answer, with the reason when they
differ. Pure: no model, no database (labels/policies.py stores policies by name and version).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guard.core.categories import Family, categories_for, custom_codes
from guard.core.errors import GuardError, InvalidCategories
from guard.core.prompt_guard_text import PREPROCESSING
from guard.core.prompts import CustomCategory, check_custom

# How an unsafe answer that names only categories the policy excludes counts: "unsafe" (the
# score decides, as without a policy) or "safe" (the policy does not enforce what was named).
EXCLUDED_ONLY = ("unsafe", "safe")
PROMPT_GUARD_MODELS = ("86m", "22m", "none")
DEFAULT_THRESHOLD = 0.5
DEFAULT_PROMPT_GUARD_THRESHOLD = 0.9  # LlamaFirewall's mark
FIELDS = ("name", "description", "family", "excluded", "custom", "threshold", "excluded_only",
          "prompt_guard", "version")
PROMPT_GUARD_FIELDS = ("model", "threshold", "preprocessing", "flags")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EXAMPLE = ('{"name": "no-s1", "family": "llama-guard-4", "excluded": ["S1"], '
           '"threshold": 0.5}')

# The file format, for editors and documentation; `Policy.from_json` checks the same rules
# and says in words what to change.
POLICY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Guard Lab policy",
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": _NAME.pattern},
        "description": {"type": "string", "default": ""},
        "family": {"enum": [f.value for f in Family], "default": Family.LLAMA_GUARD_4.value},
        "excluded": {"type": "array", "items": {"type": "string"}, "default": [],
                     "description": "category codes left out of the prompt, e.g. [\"S1\"]"},
        "custom": {"type": "array", "default": [], "items": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "description": {"type": "string"}}}},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                      "default": DEFAULT_THRESHOLD},
        "excluded_only": {"enum": list(EXCLUDED_ONLY), "default": "unsafe"},
        "prompt_guard": {"type": "object", "additionalProperties": False, "properties": {
            "model": {"enum": list(PROMPT_GUARD_MODELS), "default": "86m"},
            "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                          "default": DEFAULT_PROMPT_GUARD_THRESHOLD},
            "preprocessing": {"enum": list(PREPROCESSING), "default": "none"},
            "flags": {"type": "boolean", "default": False,
                      "description": "a p_malicious at or above the threshold flags too"}}},
        "version": {"type": "integer", "minimum": 1,
                    "description": "set by the labels store; ignored when saving"},
    },
}


class InvalidPolicy(GuardError):
    """A policy file or object breaks a rule of the policy format."""


@dataclass(frozen=True)
class PromptGuardPolicy:
    model: str = "86m"  # one of PROMPT_GUARD_MODELS
    threshold: float = DEFAULT_PROMPT_GUARD_THRESHOLD
    preprocessing: str = "none"  # one of guard.core.prompt_guard_text.PREPROCESSING
    flags: bool = False  # does a malicious score flag the conversation?

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "threshold": self.threshold,
                "preprocessing": self.preprocessing, "flags": self.flags}


@dataclass(frozen=True)
class Decision:
    """What a policy decided about one conversation, beside what the model answered."""

    policy: str | None  # the policy's label, name@version; None: loose settings, no policy
    flagged: bool
    llama_guard_unsafe: bool  # Llama Guard's part of the decision
    malicious: bool | None  # Prompt Guard at the policy's threshold; None when not run
    categories: tuple[str, ...]  # the named codes the policy enforces
    reason: str  # why the decision differs from the model's answer; "" when it does not

    @property
    def verdict(self) -> str:
        return "unsafe" if self.flagged else "safe"

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "flagged": self.flagged, "verdict": self.verdict,
                "llama_guard_unsafe": self.llama_guard_unsafe, "malicious": self.malicious,
                "categories": list(self.categories), "reason": self.reason}


@dataclass(frozen=True)
class Policy:
    name: str
    family: Family = Family.LLAMA_GUARD_4
    excluded: tuple[str, ...] = ()
    custom: tuple[CustomCategory, ...] = ()
    threshold: float = DEFAULT_THRESHOLD
    excluded_only: str = "unsafe"
    prompt_guard: PromptGuardPolicy = field(default_factory=PromptGuardPolicy)
    description: str = ""
    version: int | None = None  # given by the labels store; None: not saved (a file or a draft)
    ad_hoc: bool = field(default=False, compare=False)  # a request's loose settings, no policy

    @property
    def label(self) -> str:
        """name@version; an unsaved policy is name@draft-<first 8 of its content hash>."""
        return f"{self.name}@{self.version}" if self.version else \
            f"{self.name}@draft-{self.content_hash[:8]}"

    @property
    def recorded(self) -> str | None:
        """What a verdict, example or run records: the label, or None for loose settings."""
        return None if self.ad_hoc else self.label

    @property
    def content_hash(self) -> str:
        """What decides verdicts (not the name, description or version), hashed."""
        body = {k: v for k, v in self.to_json().items()
                if k not in ("name", "description", "version")}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @property
    def custom_json(self) -> list[dict[str, str]]:
        return [{"name": c.name, "description": c.description} for c in self.custom]

    @property
    def enabled(self) -> tuple[str, ...]:
        """The codes the prompt offers: the family's, less `excluded`, then the custom ones."""
        fixed = [c.code for c in categories_for(self.family) if c.code not in self.excluded]
        return (*fixed, *custom_codes(self.family, len(self.custom)))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "description": self.description, "family": self.family.value,
            "excluded": list(self.excluded), "custom": self.custom_json,
            "threshold": self.threshold, "excluded_only": self.excluded_only,
            "prompt_guard": self.prompt_guard.to_json()}
        if self.version is not None:
            data["version"] = self.version
        return data

    @classmethod
    def from_json(cls, data: Any, *, source: str = "the policy") -> Policy:
        """A checked policy, or InvalidPolicy naming the field and what to write instead."""
        return _parse(data, source)

    def check_family(self, family: Family | str) -> None:
        """Refuse to enforce this policy on a model of another family."""
        if Family(family) != self.family:
            raise InvalidPolicy(
                f"Policy {self.label} is for {self.family.label} ({self.family.value}), but "
                f"the loaded model is {Family(family).label}: its categories differ. Load a "
                f"{self.family.value} model, or save a policy with \"family\": "
                f"\"{Family(family).value}\".")

    def without(self, code: str) -> Policy:
        """The variant that also leaves `code` out (a sweep's "without S1"), unsaved."""
        order = [c.code for c in categories_for(self.family)]
        excluded = sorted({*self.excluded, code}, key=lambda c: (c not in order,
                                                                  order.index(c) if c in order
                                                                  else 0, c))
        return replace(self, name=f"{self.name}-no-{code.lower()}", version=None,
                       excluded=tuple(excluded), description="")

    def only(self, code: str) -> Policy:
        """The variant that enforces `code` alone among the family's categories, unsaved."""
        others = tuple(c.code for c in categories_for(self.family) if c.code != code)
        return replace(self, name=f"{self.name}-only-{code.lower()}", version=None,
                       excluded=others, description="")

    def decide(self, moderation: Mapping[str, Any]) -> Decision:
        """The policy's decision on the JSON of `moderate()` run with this policy's settings."""
        p_unsafe = float(moderation.get("p_unsafe", 0.0))
        said = moderation.get("model_label", "")
        named = [c["code"] for c in moderation.get("categories", ())]
        left_out = list(moderation.get("excluded_codes", ()))
        reasons = []
        who = "the request's settings" if self.ad_hoc else f"policy {self.label}"
        unsafe = "verdict" in moderation and p_unsafe >= self.threshold
        if unsafe and not named and left_out and self.excluded_only == "safe":
            unsafe = False
            reasons.append(f"The model answered unsafe naming only {', '.join(left_out)}, excluded "
                           f"by {who}; it counts such answers as safe.")
        elif unsafe and not named and left_out:
            reasons.append(f"The model named only {', '.join(left_out)}, excluded by "
                           f"{who}; it still counts the answer as unsafe "
                           "(\"excluded_only\": \"unsafe\").")
        elif unsafe and said != "unsafe":
            reasons.append(f"The model's text says {said or 'nothing readable'!r}, but p_unsafe "
                           f"{p_unsafe:.4g} is at or above the threshold {self.threshold:g} of "
                           f"{who}.")
        elif not unsafe and said == "unsafe" and "verdict" in moderation:
            reasons.append(f"The model answered unsafe, but p_unsafe {p_unsafe:.4g} is below the "
                           f"threshold {self.threshold:g} of {who}.")
        pg = moderation.get("prompt_guard")
        malicious = None
        if pg is not None:
            malicious = float(pg["max_p_malicious"]) >= self.prompt_guard.threshold
        flagged = unsafe
        if malicious and self.prompt_guard.flags:
            flagged = True
            if not unsafe:
                reasons.append(f"Prompt Guard's p_malicious {float(pg['max_p_malicious']):.4g} "
                               f"is at or above {self.prompt_guard.threshold:g}, and "
                               f"{who} flags attacks.")
        return Decision(self.recorded, flagged, unsafe, malicious,
                        tuple(named) if unsafe else (), " ".join(reasons))

    def apply(self, moderation: Mapping[str, Any]) -> dict[str, Any]:
        """`moderation` with the policy's label, the model's answer and the decision added."""
        return {**moderation, "policy": self.recorded, "model_answer": model_answer(moderation),
                "decision": self.decide(moderation).to_json()}


def model_answer(moderation: Mapping[str, Any]) -> dict[str, Any] | None:
    """What Llama Guard said, before any policy: its text's label, every code it named, p_unsafe."""
    if "verdict" not in moderation:
        return None
    codes = [c["code"] for c in moderation.get("categories", ())]
    codes += [*moderation.get("excluded_codes", ()), *moderation.get("unknown_codes", ())]
    return {"label": moderation.get("model_label", ""), "named": codes,
            "p_unsafe": moderation.get("p_unsafe")}


def ad_hoc(excluded: tuple[str, ...] = (), threshold: float = DEFAULT_THRESHOLD,
           family: Family | str = Family.LLAMA_GUARD_4,
           custom: tuple[CustomCategory, ...] = (), preprocessing: str = "none") -> Policy:
    """The settings of a request that named no policy, as a policy (its label is a draft)."""
    return Policy(name="ad-hoc", family=Family(family), excluded=tuple(excluded),
                  custom=tuple(custom), threshold=float(threshold),
                  prompt_guard=PromptGuardPolicy(preprocessing=preprocessing), ad_hoc=True)


def read_policy_file(path: str | Path) -> Policy:
    """A policy from a JSON file, or InvalidPolicy saying what is wrong with it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidPolicy(f"No policy file at {path}. Check the path, or write one such as "
                            f"{EXAMPLE}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPolicy(f"{path} is not a JSON policy ({exc}). Fix the file; a whole "
                            f"policy can be as short as {EXAMPLE}.") from None
    return Policy.from_json(data, source=str(path))


def parse_policy_text(text: str, *, source: str = "the policy") -> Policy:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPolicy(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}). A whole policy: {EXAMPLE}.") from None
    return Policy.from_json(data, source=source)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidPolicy(f"{where} must be a number from 0 to 1, got {value!r}.")
    return float(value)


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise InvalidPolicy(f"{where} must be one of {', '.join(choices)}, got {value!r}.")
    return value.strip().lower()


def _unknown(data: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        raise InvalidPolicy(f"{where} has unknown field{'s' if len(extra) > 1 else ''} "
                            f"{', '.join(map(repr, extra))}; a policy has {', '.join(known)}.")


def _parse(data: Any, source: str) -> Policy:
    if not isinstance(data, Mapping):
        raise InvalidPolicy(f"{source} must be a JSON object, e.g. {EXAMPLE}.")
    _unknown(data, FIELDS, source)
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise InvalidPolicy(f"{source}: \"name\" must be 1 to 64 letters, digits, '.', '_' or "
                            f"'-' (starting with a letter or digit; no '@', which separates "
                            f"the version), got {name!r}.")
    name = name.strip()
    where = f"Policy '{name}'"
    family_value = data.get("family", Family.LLAMA_GUARD_4.value)
    families = tuple(f.value for f in Family)
    family = Family(_choice(family_value, families, f"{where}: \"family\""))
    table = [c.code for c in categories_for(family)]
    excluded_value = data.get("excluded", [])
    if isinstance(excluded_value, str):
        excluded_value = [p for p in excluded_value.split(",") if p.strip()]
    if not isinstance(excluded_value, list) or not all(isinstance(c, str) for c in excluded_value):
        raise InvalidPolicy(f"{where}: \"excluded\" must be a list of category codes, e.g. "
                            "[\"S1\", \"S6\"].")
    excluded: list[str] = []
    for raw in excluded_value:
        code = raw.strip().upper()
        if code not in table:
            raise InvalidPolicy(f"{where}: \"excluded\" names {raw!r}, which {family.label} does "
                                f"not have; its codes are {table[0]} to {table[-1]}.")
        if code not in excluded:
            excluded.append(code)
    excluded.sort(key=table.index)
    custom = _custom(data.get("custom", []), where)
    if len(excluded) == len(table) and not custom:
        raise InvalidPolicy(f"{where} excludes every category and adds none, so nothing could "
                            "ever be unsafe. Enable at least one category.")
    threshold = _number(data.get("threshold", DEFAULT_THRESHOLD), f"{where}: \"threshold\"")
    excluded_only = _choice(data.get("excluded_only", "unsafe"), EXCLUDED_ONLY,
                            f"{where}: \"excluded_only\"")
    description = data.get("description", "") or ""
    if not isinstance(description, str) or len(description) > 2000:
        raise InvalidPolicy(f"{where}: \"description\" must be text of at most 2,000 characters.")
    version = data.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise InvalidPolicy(f"{where}: \"version\" is given by the labels store and must be a "
                            f"whole number from 1; got {version!r}. Leave it out.")
    return Policy(name=name, family=family, excluded=tuple(excluded), custom=custom,
                  threshold=threshold, excluded_only=excluded_only,
                  prompt_guard=_prompt_guard(data.get("prompt_guard", {}), where),
                  description=description.strip(), version=version)


def _custom(value: Any, where: str) -> tuple[CustomCategory, ...]:
    if not isinstance(value, list):
        raise InvalidPolicy(f"{where}: \"custom\" must be a list such as "
                            "[{\"name\": \"Medical advice\", \"description\": \"...\"}].")
    custom = []
    for i, item in enumerate(value, start=1):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or \
                not isinstance(item.get("description", ""), str):
            raise InvalidPolicy(f"{where}: custom category {i} must be an object with a "
                                "\"name\" and an optional \"description\" (text).")
        _unknown(item, ("name", "description"), f"{where}: custom category {i}")
        custom.append(CustomCategory(item["name"].strip(), (item.get("description") or "").strip()))
    try:
        check_custom(custom)
    except InvalidCategories as exc:
        raise InvalidPolicy(f"{where}: {exc}") from None
    return tuple(custom)


def _prompt_guard(value: Any, where: str) -> PromptGuardPolicy:
    if not isinstance(value, Mapping):
        raise InvalidPolicy(f"{where}: \"prompt_guard\" must be an object such as "
                            "{\"model\": \"86m\", \"threshold\": 0.9, \"preprocessing\": "
                            "\"none\"}.")
    here = f"{where}: \"prompt_guard\""
    _unknown(value, PROMPT_GUARD_FIELDS, here)
    flags = value.get("flags", False)
    if not isinstance(flags, bool):
        raise InvalidPolicy(f"{here}.flags must be true or false, got {flags!r}.")
    return PromptGuardPolicy(
        model=_choice(value.get("model", "86m"), PROMPT_GUARD_MODELS, f"{here}.model"),
        threshold=_number(value.get("threshold", DEFAULT_PROMPT_GUARD_THRESHOLD),
                          f"{here}.threshold"),
        preprocessing=_choice(value.get("preprocessing", "none"), PREPROCESSING,
                              f"{here}.preprocessing"),
        flags=flags)
