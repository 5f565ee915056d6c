"""The README is a front page and the docs say what the code does.

The README stays under 200 lines and links to docs/ pages that exist; every relative link and
anchor in README.md and docs/*.md resolves; every fenced block parses (bash with `bash -n`, python
with `ast`, json, yaml; console output and synopses are `text`); every `python -m ...` and
`python app.py ...` command is accepted by that program's own argument parser (nothing is run);
every GUARD_LAB_* variable the code reads is documented, and every one documented is read; and CI
runs the README's test command.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200
# The pages the README is the front of (issue 22, item 7), plus models.md for the engines.
DOC_PAGES = {"visitors.md", "reviewers.md", "product-teams.md", "api.md", "models.md", "space.md",
             "development.md"}
LANGUAGES = {"bash", "sh", "shell", "python", "json", "yaml", "text"}
SHELLS = {"bash", "sh", "shell"}
# Modules that are not ours: their commands are documented, not checked here.
OTHER_MODULES = {"pytest", "pip", "llama_cpp.server"}
# Our modules without options: they take no arguments at all.
NO_ARGUMENTS = {"guard.testing.ship"}
SOURCES = ("app.py", "guard", "guard_app", "labels", "bench", "tests", ".ci")
# Variables of work still in progress this session, whose text the lead adds: each must stay
# undocumented while listed here (the test fails once it is documented, to empty the list).
AWAITING_DOCS: set[str] = set()
VARIABLE = re.compile(r"\bGUARD_LAB_[A-Z0-9_]+")
ENV_INT = re.compile(r"_env_int\(\s*\"([A-Z0-9_]+)\"")  # guard/core/limits.py: GUARD_LAB_ + name


def parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    """Each documented program's own parser builder, by how the docs call it."""
    import guard.cli
    import guard.eval.cli
    import guard.tune.cli
    import guard_app.config
    import labels.cli

    return {"guard": guard.cli._parser, "guard.eval": guard.eval.cli._parser,
            "guard.tune": guard.tune.cli._parser, "labels": labels.cli.build_parser,
            "app.py": lambda: guard_app.config.parser({})}


# ---- reading the pages --------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str

    def where(self) -> str:
        return f"{shown(self.page)}:{self.line}"


def shown(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else page.name


def blocks(page: Path) -> list[Block]:
    found, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^ {0,3}(`{3,}|~{3,})\s*(\S*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, start, body = opening.group(1), i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        found.append(Block(page, start + 1, opening.group(2).lower(), "\n".join(body) + "\n"))
        i += 1
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks (blank lines keep paragraphs apart)."""
    text = page.read_text(encoding="utf-8")
    for block in blocks(page):
        text = text.replace(block.text, "\n", 1)
    return re.sub(r"^ {0,3}(`{3,}|~{3,}).*$", "", text, flags=re.M)


def inline_code(page: Path) -> list[str]:
    """Code spans of the prose (a span may wrap onto the next line)."""
    return [" ".join(span.split())
            for span in re.findall(r"(?<!`)`([^`]+?)`(?!`)", prose(page)) if "\n\n" not in span]


def links(page: Path) -> list[str]:
    text = re.sub(r"(?<!`)`[^`]+?`(?!`)", "", prose(page))
    return re.findall(r"\]\(([^)\s]+)\)", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose(page), flags=re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)  # GitHub numbers repeats
        seen[base] = seen.get(base, 0) + 1
    return found


# ---- commands -----------------------------------------------------------------------------------

def shell_commands(script: str) -> Iterator[list[str]]:
    """Each simple command of a shell script as words: no comments, redirections or VAR=value."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        command: list[str] = []
        words = iter(list(lexer))
        for word in words:
            if word in {"&&", "||", "|", ";", "&"}:
                yield command
                command = []
            elif word in {">", ">>", "<", "2>", "&>"}:
                next(words, None)
            elif command or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
                command.append(word)
        yield command


def program(words: list[str]) -> tuple[str, list[str]] | None:
    """('guard.eval', args) for `python -m guard.eval ARGS`, ('bench/x.py', args) for a script."""
    if len(words) < 2 or words[0] not in {"python", "python3"}:
        return None
    if words[1] == "-m" and len(words) > 2:
        return words[2], words[3:]
    return (words[1], words[2:]) if words[1].endswith(".py") else None


def refusal(name: str, args: list[str]) -> str | None:
    """Why `name`'s own parser refuses `args` (None: accepted). Nothing is run."""
    if name in OTHER_MODULES:
        return None
    if name in NO_ARGUMENTS:
        return f"{name} takes no arguments" if args else None
    known = parsers()
    if name not in known:
        if name.endswith(".py") and name != "app.py":
            return None if (REPO / name).is_file() else f"{name} does not exist"
        return (f"no parser known for {name}: add its builder to parsers() in tests/test_docs.py, "
                f"or to OTHER_MODULES if it is not ours")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            known[name]().parse_args(args)
    except SystemExit as exit_:
        return None if exit_.code == 0 else stderr.getvalue().strip().splitlines()[-1]
    return None


def options_along(parser: argparse.ArgumentParser, words: list[str]) -> set[str]:
    """The options a synopsis may name: the parser's, and its subcommands' that `words` pick
    (`create|list` picks both)."""
    options = {o for action in parser._actions for o in action.option_strings}
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not words or not subcommands:
        return options
    choices = subcommands[0].choices
    picked = words[0].split("|")
    if all(p in choices for p in picked):
        for p in picked:
            options |= options_along(choices[p], words[1:] if len(picked) == 1 else [])
    return options


def unknown_options(line: str) -> str | None:
    """For a synopsis line (`python -m guard.eval DATA [--name RUN] ...`): which option its program
    does not have (None: all known, or not one of our programs)."""
    words = line.split()
    found = program(words)
    if found is None or found[0] not in parsers():
        return None
    name, rest = found
    leading = []
    for word in rest:
        if word.startswith(("-", "[")) or word == "...":
            break
        leading.append(word)
    known = options_along(parsers()[name](), leading)
    named = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(rest)))
    missing = sorted(named - known)
    return f"{name} has no option {', '.join(missing)}" if missing else None


def synopsis_lines(block: Block) -> list[str]:
    """The commands of a text block, each with its indented continuation lines."""
    lines: list[str] = []
    for line in block.text.splitlines():
        if line[:1].isspace() and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line.strip())
    return lines


def command_problems(page: Path) -> list[str]:
    problems = []
    for block in blocks(page):
        if block.language in SHELLS:
            for words in shell_commands(block.text):
                found = program(words)
                if found and (why := refusal(*found)):
                    problems.append(f"{block.where()}: `{shlex.join(words)}`: {why}")
        elif block.language == "text":
            problems += [f"{block.where()}: `{line}`: {why}" for line in synopsis_lines(block)
                         if (why := unknown_options(line))]
    for span in inline_code(page):
        if why := unknown_options(span):
            problems.append(f"{shown(page)}: `{span}`: {why}")
    return problems


# ---- the checks ---------------------------------------------------------------------------------

def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; move text to docs/"
    targets = {link.split("#")[0] for link in links(README) if not re.match(r"\w+:", link)}
    pages = {t for t in targets if t.startswith("docs/") and t.endswith(".md")}
    assert {f"docs/{name}" for name in DOC_PAGES} <= pages, "the README links every doc page"
    assert {f"docs/{p.name}" for p in DOCS.glob("*.md")} <= pages, "a doc page the README hides"
    strays = targets - pages - {"SECURITY.md", "ARCHITECTURE.md", "docs/images/guard-lab.png"}
    assert not strays, f"the README links only to docs pages: {sorted(strays)}"


def test_ci_runs_the_readme_test_command():
    """`.ci/run` runs exactly the README's test command: the same install, then the same pytest."""
    commands = [b.text.strip() for b in blocks(README)
                if b.language in SHELLS and "pytest" in b.text and "pip install" in b.text]
    assert len(commands) == 1, "the README has one test command: install, then pytest"
    install, test = (part.strip() for part in commands[0].rsplit("&&", 1))
    ci = [line.strip() for line in (REPO / ".ci/run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == test
    ci_install = next(line for line in ci if "pip install" in line)
    requirements = re.findall(r"-r (\S+)", install)
    assert requirements and requirements == re.findall(r"-r (\S+)", ci_install)
    assert "--no-deps" in install and "--no-deps" in ci_install
    cmake = re.search(r"CMAKE_ARGS=(\S+)", install).group(1)
    assert f'export CMAKE_ARGS="{cmake}"' in ci


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for link in links(page):
        if re.match(r"\w+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: {target.name} has no heading #{anchor}")
    assert not broken, f"{page.name}: {broken}"


def block_problem(block: Block) -> str | None:
    """Why a fenced block does not parse in its language (None: it parses)."""
    if block.language not in LANGUAGES:
        return f"fence language {block.language!r}: use one of {sorted(LANGUAGES)}"
    try:
        if block.language in SHELLS:
            done = subprocess.run(["bash", "-n"], input=block.text, capture_output=True,
                                  text=True, timeout=60)
            return (done.stderr.strip() or "bash -n refuses it") if done.returncode else None
        if block.language == "python":
            ast.parse(block.text)
        elif block.language == "json":
            json.loads(block.text)
        elif block.language == "yaml":
            yaml.safe_load(block.text)
    except (SyntaxError, ValueError, yaml.YAMLError) as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_fenced_block_parses(page):
    problems = [f"{b.where()}: {why}" for b in blocks(page) if (why := block_problem(b))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_is_accepted_by_its_parser(page):
    problems = command_problems(page)
    assert not problems, "\n".join(problems)


def read_in_code() -> set[str]:
    names = set()
    for top in SOURCES:
        root = REPO / top
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()
                                               and p.suffix in {".py", ""} and p != Path(__file__)]
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            names |= {n for n in VARIABLE.findall(text) if not n.endswith("_")}
            names |= {f"GUARD_LAB_{n}" for n in ENV_INT.findall(text)}
    return names


def documented() -> set[str]:
    return {n for page in PAGES for n in VARIABLE.findall(page.read_text(encoding="utf-8"))
            if not n.endswith("_")}


def test_every_variable_the_code_reads_is_documented():
    assert read_in_code() - documented() - AWAITING_DOCS == set()
    assert AWAITING_DOCS - read_in_code() == set(), "AWAITING_DOCS names a variable no code reads"
    assert AWAITING_DOCS & documented() == set(), "documented now: remove it from AWAITING_DOCS"


def test_every_documented_variable_is_read_by_the_code():
    assert documented() - read_in_code() == set()


# ---- the checks can fail --------------------------------------------------------------------------

def test_the_checks_catch_broken_commands_blocks_and_links(tmp_path):
    assert refusal("guard.eval", ["data.csv", "--out", "db", "--no-such-flag"])
    assert refusal("labels", ["queue", "submit", "misses", "--db", "db"])  # no item, no reviewer
    assert refusal("app.py", ["--engine", "vllm"])
    assert refusal("guard.nothing", []) and refusal("bench/no_such.py", [])
    assert refusal("guard", ["classify", "conv.json", "--tiny"]) is None
    assert unknown_options("python -m guard.tune train --db DB [--learning-rate 1e-4]")
    assert unknown_options("python -m labels queue create|list --db DB [--json]") is None
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[gone](nowhere.md) and [here](#title) and [not](#nope)\n\n"
                    "```bash\nif then fi\n```\n\n```python\ndef (:\n```\n\n```\nbare\n```\n\n"
                    "```bash\npython -m guard.eval --out db --threshold high\n```\n")
    assert links(page) == ["nowhere.md", "#title", "#nope"] and anchors(page) == {"title"}
    assert [block_problem(b) is not None for b in blocks(page)] == [True, True, True, False]
    assert len(command_problems(page)) == 1
    words = list(shell_commands('A=1 python -m labels export --db d --format jsonl x > y  # c'))
    assert words == [["python", "-m", "labels", "export", "--db", "d", "--format", "jsonl", "x"]]
