"""`python -m labels prompt-guard`: Prompt Guard labels of saved examples' user messages (label,
show, rows, disagreements, resolve), and the `--prompt-guard` option of `queue submit`.

Messages are numbered from 1 here, as the app shows them; the JSON (and the Python API) use the
0-based `message_index` of Prompt Guard's scores.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from labels import prompt_guard as pg
from labels.cli_final import add_labels_option
from labels.errors import InvalidLabel
from labels.final import OPEN
from labels.store import Store


def add_prompt_guard_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("prompt-guard", help="Prompt Guard labels: benign or malicious "
                                 "per user message")
    sub = parser.add_subparsers(dest="prompt_guard_command", required=True)
    label = sub.add_parser("label", help="label a user message of a saved example")
    label.add_argument("--db", required=True)
    label.add_argument("example", type=int, help="the example id")
    label.add_argument("--reviewer", required=True)
    label.add_argument("--message", type=int, required=True,
                       help="the user message, numbered from 1 as the app shows it")
    label.add_argument("--label", required=True, help=pg.VALUE_HELP.replace(", or", " or"))
    label.add_argument("--preprocessing", default="none",
                       help="the preprocessing the score was given with (none, llamafirewall)")
    label.add_argument("--note", default="")
    show = sub.add_parser("show", help="an example's Prompt Guard labels and final labels")
    show.add_argument("--db", required=True)
    show.add_argument("example", type=int)
    rows = sub.add_parser("rows", help="the settled labels, one JSON line per user message")
    rows.add_argument("--db", required=True)
    add_labels_option(rows)
    listing = sub.add_parser("disagreements", help="messages whose reviewers disagree")
    listing.add_argument("--db", required=True)
    listing.add_argument("--all", action="store_true", help="resolved and settled ones too")
    listing.add_argument("--json", action="store_true")
    resolve = sub.add_parser("resolve", help="a lead's final label for a message, with why")
    resolve.add_argument("--db", required=True)
    resolve.add_argument("example", type=int)
    resolve.add_argument("--message", type=int, required=True, help="numbered from 1")
    resolve.add_argument("--lead", required=True, help="who decides (recorded)")
    resolve.add_argument("--label", required=True, help="benign or malicious")
    resolve.add_argument("--reason", required=True, help="why (recorded)")


def add_submit_option(submit: argparse.ArgumentParser) -> None:
    submit.add_argument("--prompt-guard", default="", metavar="N=LABEL,...",
                        help="Prompt Guard labels of the user messages, numbered from 1, e.g. "
                             "1=malicious or 1=benign,3=malicious (required in a queue of "
                             "Prompt Guard's misses)")


def parse_submit_option(text: str) -> dict[int, bool]:
    """'1=malicious,3=benign' -> {0: True, 2: False}."""
    out: dict[int, bool] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        number, sep, value = part.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1:
            raise InvalidLabel(f"--prompt-guard takes MESSAGE=LABEL pairs such as 1=malicious, "
                               f"got {part!r}.")
        out[int(number) - 1] = pg.parse_value(value)
    return out


def run_prompt_guard(store: Store, args: argparse.Namespace) -> str:
    command = args.prompt_guard_command
    if command == "label":
        [(saved, action)] = pg.record(store, args.example, args.reviewer, [pg.PromptGuardInput(
            _message(args.message), pg.parse_value(args.label), preprocessing=args.preprocessing,
            note=args.note)])
        return (f"Example {args.example} message {saved.message_index + 1}: {saved.value} "
                f"({action}) by {saved.reviewer}{_score(saved.score)}")
    if command == "show":
        finals = pg.finals_of(store, args.example)
        data: dict[str, Any] = {
            "labels": [x.to_json() for x in pg.labels_of(store, args.example)],
            "final": [f.to_json() for f in finals.values()]}
        return json.dumps(data, indent=2)
    if command == "rows":
        return "\n".join(json.dumps(r.to_json(), ensure_ascii=False)
                         for r in pg.prompt_guard_rows(store, labels=args.labels))
    if command == "resolve":
        decided = pg.resolve(store, args.example, _message(args.message), args.lead, args.label,
                             args.reason)
        return (f"Example {decided.example_id} message {decided.message_index + 1}: final "
                f"{'malicious' if decided.malicious else 'benign'} by {decided.decided_by} "
                f"({decided.reason})")
    found = pg.disagreements(store, status=None if args.all else OPEN)
    if args.json:
        return json.dumps([d.to_json() for d in found], indent=2)
    if not found:
        return "No open Prompt Guard disagreements." if not args.all else \
            "No Prompt Guard disagreements."
    return "\n".join(
        f"example {d.example_id} message {d.message_index + 1}"
        f"{f' in {d.queue!r}' if d.queue else ''} [{d.status}]: "
        + "; ".join(f"{x['reviewer']}: {x['label']}" for x in d.labels) for d in found)


def _message(number: int) -> int:
    if number < 1:
        raise InvalidLabel(f"Messages are numbered from 1, got {number}.")
    return number - 1


def _score(score: float | None) -> str:
    return "" if score is None else f", against score {score:.3f}"
