"""The folders import one way (ARCHITECTURE.md), and the heavy libraries stay where they belong.

Every import counts, also those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import REPO

# The folders, most specific first; a module belongs to the first that prefixes it.
FOLDERS = ("guard.core", "guard.engines", "guard.testing", "guard.eval", "guard.tune",
           "guard.adapters", "guard", "labels", "guard_app", "app")
# What each folder may import (besides itself). The arrows of ARCHITECTURE.md.
ALLOWED = {
    "guard.core": set(),
    "labels": {"guard.core"},
    "guard.engines": {"guard.core", "guard.testing"},
    "guard.testing": {"guard.core"},
    "guard": {"guard.core", "guard.engines", "guard.testing"},
    "guard.adapters": {"guard.core", "guard.engines", "guard"},
    "guard.eval": {"guard.core", "guard.engines", "guard.testing", "guard", "labels"},
    "guard.tune": {"guard.core", "guard.engines", "guard.testing", "guard", "guard.eval",
                   "labels"},
    "guard_app": {"guard.core", "guard.engines", "guard.testing", "guard", "guard.eval",
                  "guard.tune", "guard.adapters", "labels"},
    "app": {"guard.core", "guard.engines", "guard", "guard_app", "labels"},
}
# Libraries a folder must never import.
FORBIDDEN = {
    "guard.core": {"torch", "transformers", "gradio", "sqlite3", "sqlite_utils", "llama_cpp",
                   "openai", "peft"},
    "labels": {"torch", "transformers", "gradio", "peft"},
    "guard.engines": {"gradio", "sqlite3", "sqlite_utils"},
    "guard.testing": {"gradio", "sqlite3", "sqlite_utils"},
    "guard": {"gradio"},
    "guard.adapters": {"gradio"},
    "guard.eval": {"gradio"},
    "guard.tune": {"gradio"},
}


def folder_of(module: str) -> str | None:
    for folder in FOLDERS:
        if module == folder or module.startswith(folder + "."):
            return folder
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def sources() -> list[Path]:
    files = [REPO / "app.py"]
    for top in ("guard", "labels", "guard_app"):
        files += sorted((REPO / top).rglob("*.py"))
    return files


def graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    edges, why = defaultdict(set), defaultdict(list)
    for path in sources():
        source = folder_of(module_name(path))
        for name in imports_of(path):
            target = folder_of(name)
            if target is not None and target != source:
                edges[source].add(target)
                why[(source, target)].append(f"{path.relative_to(REPO)} imports {name}")
    return edges, why


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_source_file_belongs_to_a_folder():
    assert all(folder_of(module_name(p)) for p in sources())


def test_no_import_cycle_between_the_folders():
    edges, why = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle " + " -> ".join(cycle) + ":\n" + "\n".join(
        why[(a, b)][0] for a, b in zip(cycle, cycle[1:], strict=False))


def test_each_folder_imports_only_what_architecture_md_allows():
    edges, why = graph()
    wrong = [f"{why[(source, target)][0]} ({source} may not import {target})"
             for source, targets in edges.items() for target in targets
             if target not in ALLOWED[source]]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_heavy_libraries_stay_out_of_the_folders_that_do_not_need_them(folder):
    wrong = []
    for path in sources():
        if folder_of(module_name(path)) != folder:
            continue
        for name in imports_of(path):
            if name.split(".")[0] in FORBIDDEN[folder]:
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_app_logic_modules_are_gradio_free():
    """Each feature folder of guard_app: a gradio-free logic module and a tab module."""
    logic = sorted((REPO / "guard_app").glob("*/logic.py"))
    assert logic, "no feature folder with a logic.py"
    wrong = [str(p.relative_to(REPO)) for p in logic if "gradio" in
             {n.split(".")[0] for n in imports_of(p)}]
    assert not wrong, wrong


def test_the_architecture_test_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def long_functions(paths, limit: int = 80) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    return found


def test_no_function_of_the_app_is_over_80_lines():
    paths = [REPO / "app.py", *sorted((REPO / "guard_app").rglob("*.py"))]
    assert not long_functions(paths), long_functions(paths)


# ---- guard_app's rooms: no feature folder leans on another (issue 22) ----

def feature_folders() -> set[str]:
    """guard_app's feature folders (guard_app/<feature>/, one per screen)."""
    return {p.parent.name for p in (REPO / "guard_app").glob("*/__init__.py")}


def feature_of(module: str, features: set[str]) -> str | None:
    """'guard_app.moderate.tab' -> 'moderate'; a shared module (guard_app.run) -> None."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "guard_app" and parts[1] in features:
        return parts[1]
    return None


def cross_feature(module: str, imported: str, features: set[str]) -> bool:
    """Whether `module` (in a feature folder) imports another feature folder."""
    mine, theirs = feature_of(module, features), feature_of(imported, features)
    return mine is not None and theirs is not None and mine != theirs


def test_the_rule_catches_an_import_of_another_feature_folder():
    features = {"moderate", "review", "explore"}
    assert cross_feature("guard_app.moderate.tab", "guard_app.review.tab", features)
    assert cross_feature("guard_app.review.logic", "guard_app.moderate", features)
    assert not cross_feature("guard_app.moderate.tab", "guard_app.moderate.logic", features)
    assert not cross_feature("guard_app.moderate.tab", "guard_app.run", features)
    assert not cross_feature("guard_app.page", "guard_app.review.tab", features)  # composes


def test_no_feature_folder_imports_another():
    """page.py composes the panels; what several screens share lives in guard_app's own
    modules (run, conversation, parsers, result_html, policy_picker). Imports inside
    functions count too (imports_of walks the whole file)."""
    features = feature_folders()
    assert {"moderate", "review", "explore", "api", "evaluate"} <= features
    wrong = sorted(f"{path.relative_to(REPO)} imports {name}"
                   for path in sorted((REPO / "guard_app").rglob("*.py"))
                   for name in imports_of(path)
                   if cross_feature(module_name(path), name, features))
    assert not wrong, "\n".join(wrong)
