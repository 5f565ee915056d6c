"""Shared fixtures: the tiny offline models, built once per machine and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def tiny_cache_dir() -> Path:
    return Path(os.environ.get("GUARD_LAB_TINY_DIR") or REPO / ".cache" / "tiny")


@pytest.fixture(scope="session")
def tiny_dirs() -> tuple[Path, Path]:
    from guard.tiny import build_tiny_models

    return build_tiny_models(tiny_cache_dir())


@pytest.fixture(scope="session")
def llama_guard(tiny_dirs):
    from guard.llama_guard import LlamaGuard

    return LlamaGuard.load(tiny_dirs[0], device="cpu")


@pytest.fixture(scope="session")
def prompt_guard(tiny_dirs):
    from guard.prompt_guard import PromptGuard

    return PromptGuard.load(tiny_dirs[1], device="cpu")


@pytest.fixture(scope="session")
def guards(llama_guard, prompt_guard):
    from guard.service import Guards

    return Guards(llama_guard, prompt_guard)
