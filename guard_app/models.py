"""Loading the models once per process, and keeping a failed load as a message for the page."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from guard.errors import ModelLoadError
from guard.prompt_guard import PROMPT_GUARD_MODELS
from guard.service import Guards

from .config import Options

LLAMA_GUARD = "Llama Guard 4"
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
    if options.tiny:
        from guard.service import tiny_guards

        guards = tiny_guards(options.tiny_dir)
        choices = PromptGuardChoices.fixed(guards.prompt_guard, tiny=True)
        return Loaded(guards, choices, "86m")

    from guard.llama_guard import LlamaGuard
    from guard.prompt_guard import PromptGuard

    failures: dict[str, str] = {}
    guards = Guards()
    try:
        guards.llama_guard = LlamaGuard.load(options.llama_guard, device=options.device)
    except ModelLoadError as exc:
        failures[LLAMA_GUARD] = str(exc)
    if options.prompt_guard.lower() == "none":
        return Loaded(guards, None, None, failures)

    sources = {k: v for k, v in PROMPT_GUARD_MODELS.items()}
    labels = {"86m": "86M (multilingual)", "22m": "22M (English, faster)"}
    default = options.prompt_guard.lower()
    if default not in sources:
        default = options.prompt_guard
        sources = {default: options.prompt_guard, **sources}
    choices = PromptGuardChoices(
        sources, lambda source: PromptGuard.load(source, device=options.device), labels=labels)
    try:
        guards.prompt_guard = choices.get(default)
    except ModelLoadError as exc:
        failures[PROMPT_GUARD] = str(exc)
    return Loaded(guards, choices, default, failures)
