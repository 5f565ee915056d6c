"""Loading the models once per process, and keeping a failed load as a message for the page."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from guard.core.categories import guess_family
from guard.core.errors import GuardError, ModelLoadError
from guard.engines import loading
from guard.engines.loading import EngineOptions
from guard.engines.prompt_guard import PROMPT_GUARD_MODELS
from guard.engines.service import Guards
from guard.engines.tuned_prompt_guard import is_tuned_folder
from guard_app.config import Options

LLAMA_GUARD = "Llama Guard 4"  # the default model, and the banner's name for it
PROMPT_GUARD = "Prompt Guard 2"


class PromptGuardChoices:
    """The Prompt Guard variants a visitor can pick, each loaded on first use and then kept.

    A failed load is kept too, so the page can say why without retrying on every run.
    """

    def __init__(self, sources: dict[str, str], loader: Callable[[str], Any], *,
                 labels: dict[str, str] | None = None, loaded: dict[str, Any] | None = None):
        self.sources = dict(sources)
        self.labels = {k: (labels or {}).get(k, k) for k in sources}
        self._loader = loader
        self._models: dict[str, Any] = dict(loaded or {})
        self._errors: dict[str, ModelLoadError] = {}
        self._lock = threading.Lock()

    @classmethod
    def fixed(cls, model: Any, *, tiny: bool = False) -> PromptGuardChoices:
        """One loaded model behind every choice (the tiny mode, and tests)."""
        if tiny:
            labels = {"86m": "86M (tiny test model)", "22m": "22M (tiny test model)"}
            return cls({k: "tiny" for k in labels}, lambda _: model, labels=labels,
                       loaded=dict.fromkeys(labels, model))
        name = getattr(model, "name", "prompt guard")
        return cls({"loaded": name}, lambda _: model, labels={"loaded": name},
                   loaded={"loaded": model})

    @property
    def choices(self) -> list[tuple[str, str]]:
        return [(self.labels[k], k) for k in self.sources]

    def load_all(self) -> None:
        """Load every choice now (a failure is kept, as on first use)."""
        for key in self.sources:
            with contextlib.suppress(ModelLoadError):  # the page says why, as on first use
                self.get(key)

    def get(self, key: str) -> Any:
        if key not in self.sources:
            raise ModelLoadError(f"Unknown Prompt Guard choice '{key}'. Pick one of "
                                 f"{', '.join(self.sources)}.")
        with self._lock:
            if key in self._models:
                return self._models[key]
            if key in self._errors:
                raise self._errors[key]
            try:
                model = self._loader(self.sources[key])
            except ModelLoadError as exc:
                self._errors[key] = exc
                raise
            self._models[key] = model
            return model


@dataclass
class Loaded:
    guards: Guards
    prompt_guards: PromptGuardChoices | None
    default_prompt_guard: str | None
    failures: dict[str, str] = field(default_factory=dict)


def load_models(options: Options) -> Loaded:
    """Load what the options ask for; a model that fails becomes a message, not a crash."""
    engines = options.engines
    failures: dict[str, str] = {}
    guards = Guards()
    try:
        guards.llama_guard = loading.load_llama_guard(engines)
    except GuardError as exc:  # ModelLoadError, a refused adapter, an unreachable server
        failures[llama_guard_label(engines)] = str(exc)
    if engines.tiny and is_tuned_folder(engines.prompt_guard):  # tuned on the tiny one
        try:
            guards.prompt_guard = loading.load_prompt_guard(engines)
        except ModelLoadError as exc:  # another base: the page says which it needs
            failures[PROMPT_GUARD] = str(exc)
            return Loaded(guards, None, None, failures)
        return Loaded(guards, PromptGuardChoices.fixed(guards.prompt_guard), "loaded", failures)
    if engines.tiny:
        guards.prompt_guard = loading.load_prompt_guard(engines, "tiny")
        return Loaded(guards, PromptGuardChoices.fixed(guards.prompt_guard, tiny=True), "86m",
                      failures)
    if engines.prompt_guard.lower() == "none":
        return Loaded(guards, None, None, failures)

    sources = dict(PROMPT_GUARD_MODELS)
    labels = {"86m": "86M (multilingual)", "22m": "22M (English, faster)"}
    default = engines.prompt_guard.lower()
    if default not in sources:
        default = engines.prompt_guard
        sources = {default: engines.prompt_guard, **sources}
    choices = PromptGuardChoices(
        sources, lambda source: loading.load_prompt_guard(engines, source), labels=labels)
    try:
        guards.prompt_guard = choices.get(default)
    except ModelLoadError as exc:
        failures[PROMPT_GUARD] = str(exc)
    return Loaded(guards, choices, default, failures)


def llama_guard_label(engines: EngineOptions) -> str:
    """What the banner calls the Llama Guard the options ask for, before it has loaded."""
    if engines.family is not None:
        return engines.family.label
    if engines.engine == "llama-cpp":
        return guess_family(engines.gguf or "").label
    if engines.engine == "openai":
        return guess_family(engines.openai_env.get("GUARD_LAB_OPENAI_MODEL", "")).label
    return LLAMA_GUARD
