"""Shared fixtures and the hook that marks what a test needs.

Plain helpers (paths, ports, serving the app) are in helpers.py: `from helpers import ...`.

The fast loop, with no tiny models, servers, browser or GPU:

    python3 -m pytest -m "not models and not server and not browser and not gpu"
"""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, tiny_cache_dir

# A test gets a mark when it uses one of these fixtures, directly or through another fixture.
# Fixtures that start a server have the same names in every file (served, url, client, space).
MARKS_BY_FIXTURE = {
    "models": {"tiny_dirs", "tiny_text"},  # llama_guard, prompt_guard and guards use tiny_dirs
    "server": {"served", "url", "client", "space", "llama_server"},
    "browser": {"browser"},
}
# ...or when it calls one of these, itself or through a function defined in its file.
MARKS_BY_CALL = {
    "models": {"build_tiny_models", "build_tiny_text_model", "load_models"},
    "server": {"launch_app", "start_app_process"},
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if hasattr(item, "callspec"):  # a parametrized argument is not a fixture
            used -= set(item.callspec.params)
        for mark, fixtures in MARKS_BY_FIXTURE.items():
            if used & fixtures:
                item.add_marker(mark)
        called = _called(item)
        for mark, functions in MARKS_BY_CALL.items():
            if called & functions:
                item.add_marker(mark)


def _called(item: pytest.Item) -> set[str]:
    """The names a test calls (or reads), itself or through the functions of its file."""
    function = getattr(item, "function", None)
    if function is None:
        return set()
    called = _names(function.__code__)
    for name in called.copy():
        helper = getattr(item.module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == item.module.__name__:
            called |= _names(inspect.unwrap(helper).__code__)
    return called


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names in a function's code, its inner functions' included."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names(constant)
    return names


# ---- the tiny offline models, built once per machine and cached on disk -------------------------

@pytest.fixture(scope="session")
def tiny_dirs() -> tuple[Path, Path]:
    from guard.testing.tiny import build_tiny_models

    return build_tiny_models(tiny_cache_dir())


@pytest.fixture(scope="session")
def tiny_text():
    """The tiny text-only Llama Guard 3 stand-in, with its GGUF files (guard/testing/tiny_text.py)."""
    from guard.testing.tiny_text import build_tiny_text_model

    return build_tiny_text_model(tiny_cache_dir())


@pytest.fixture(scope="session")
def llama_guard(tiny_dirs):
    from guard.engines.llama_guard import LlamaGuard

    return LlamaGuard.load(tiny_dirs[0], device="cpu")


@pytest.fixture(scope="session")
def prompt_guard(tiny_dirs):
    from guard.engines.prompt_guard import PromptGuard

    return PromptGuard.load(tiny_dirs[1], device="cpu")


@pytest.fixture(scope="session")
def guards(llama_guard, prompt_guard):
    from guard.engines.service import Guards

    return Guards(llama_guard, prompt_guard)


# ---- the page's example pictures, and a labels database -----------------------------------------

@pytest.fixture(scope="module")
def swatches(tmp_path_factory) -> dict[str, str]:
    """The example pictures the page offers, written once per test file."""
    from guard_app.moderate.examples import write_swatches

    return write_swatches(tmp_path_factory.mktemp("swatches"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "labels.db"


@pytest.fixture
def store(db_path: Path):
    """An empty labels store in a real SQLite file at `db_path`, closed after the test.

    A file that needs it filled overrides `store` with a fixture that asks for this one and
    saves its examples into it (another file name: override `db_path`).
    """
    from labels import Store

    with Store(db_path) as store:
        yield store


# ---- a real browser -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (never `playwright install`)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        _patient(chromium, sync_api)
        yield chromium
        chromium.close()


BROWSER_WAIT_MS = 120_000  # every wait of a page, unless a test names its own: a loaded machine


def _patient(chromium, sync_api) -> None:
    """Every page and context of `chromium` waits up to BROWSER_WAIT_MS for an element (the
    default, 30 s, ran out on a loaded machine before a panel shown on sign-in came), and
    `expect` assertions too. Each wait still ends as soon as what it waits for is there."""
    new_context, new_page = chromium.new_context, chromium.new_page

    def patient_context(*args, **kwargs):
        context = new_context(*args, **kwargs)
        context.set_default_timeout(BROWSER_WAIT_MS)
        return context

    def patient_page(*args, **kwargs):
        page = new_page(*args, **kwargs)
        page.context.set_default_timeout(BROWSER_WAIT_MS)
        page.set_default_timeout(BROWSER_WAIT_MS)
        return page

    chromium.new_context, chromium.new_page = patient_context, patient_page
    sync_api.expect.set_options(timeout=BROWSER_WAIT_MS)
