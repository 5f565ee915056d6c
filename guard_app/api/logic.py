"""The `/moderate` endpoint's input handling: JSON messages plus uploaded image files.

The parsing itself is shared by every endpoint (guard_app.parsers); this adds the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guard.core.conversation import MAX_IMAGES
from guard.core.errors import ModelLoadError
from guard.core.prompt_guard_text import check_preprocessing
from guard.core.verdict import DEFAULT_THRESHOLD
from guard.engines.service import Guards
from guard_app import gpu
from guard_app.parsers import (  # noqa: F401 (the endpoints' parsers, named here as before)
    EXAMPLE,
    build_conversation,
    match_uploads,
    parse_excluded,
    parse_messages,
    parse_threshold,
)


def moderate_api(guards: Guards, conversation: str | list | None, images: Sequence[str] | None,
                 excluded: str | Sequence[str] | None, threshold: float | str | None, *,
                 default_threshold: float = DEFAULT_THRESHOLD,
                 max_images: int = MAX_IMAGES,
                 prompt_guard_preprocessing: str | None = None, policies: Any = None,
                 policy: str | None = None) -> dict[str, Any]:
    """/moderate: the same JSON as `python -m guard classify`. With `policies` (a
    guard_app.policies.PolicyBook), also `policy`, `model_answer` and `decision`: under the
    policy `policy` names (a saved name or JSON), or the server's default, or the loose
    `excluded` and `threshold`."""
    built = build_conversation(conversation, images, max_images=max_images)
    if guards.llama_guard is None and guards.prompt_guard is None:
        raise ModelLoadError("No model is loaded on this server; see the banner on its page.")
    preprocessing = check_preprocessing(prompt_guard_preprocessing)
    if policies is not None:
        from guard_app import policies as policy_runs

        loose = None if threshold is None or threshold == "" else parse_threshold(threshold)
        chosen = policies.resolve(policy or None, excluded=parse_excluded(excluded),
                                  threshold=loose, preprocessing=preprocessing)
        return policy_runs.moderate(gpu.register(guards), gpu.plain(built), chosen)
    return gpu.moderate(gpu.register(guards), gpu.plain(built), list(parse_excluded(excluded)),
                        parse_threshold(threshold, default_threshold),
                        pg_preprocessing=preprocessing)


def explore_inputs_api(guards: Guards) -> Any:
    """The engine /sweep, /category_scores and /attribution run on."""
    if guards.llama_guard is None:
        raise ModelLoadError("Llama Guard is not loaded on this server; see the banner on its "
                             "page.")
    return guards.llama_guard
