"""What every tab of the page is built over: the loaded models and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from guard.core.categories import Family, categories_for
from guard.engines.engine import ModelInfo
from guard.engines.service import Guards
from guard_app.models import PromptGuardChoices
from guard_app.moderate.logic import engine_family, engine_info

GPU = "gpu"  # the concurrency group of every interactive event that runs a model
EVAL = "eval"  # batch evaluations: their own group, one at a time, so they never hold GPU's slot
PRIVATE = {"api_visibility": "private"}  # the page's plumbing: not on the API page, not MCP


@dataclass(frozen=True)
class PageContext:
    guards: Guards
    prompt_guards: PromptGuardChoices | None
    default_prompt_guard: str | None
    store: Any  # a labels.Store, or None: labelling is off
    tiny: bool
    threshold: float
    max_images: int
    concurrency: int
    slot: int  # the models' number at the GPU boundary (guard_app.gpu.register)
    ttl: int  # seconds a session's state is kept
    swatches: dict[str, str]  # the example pictures, written once
    prompt_guard_preprocessing: str
    bar: Any = None  # the reviewer bar (guard_app.signin.ReviewerBar) when labelling is on
    policies: Any = None  # guard_app.policies.PolicyBook: saved policies and the default one

    @cached_property
    def info(self) -> ModelInfo | None:
        return engine_info(self.guards)

    @cached_property
    def family(self) -> Family:
        """The loaded Llama Guard's family; Llama Guard 4's categories when none is loaded."""
        return engine_family(self.guards)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in categories_for(self.family))

    @property
    def takes_images(self) -> bool:
        info = self.info
        return info is None or info.capabilities.images
