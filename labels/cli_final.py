"""`python -m labels disagreements`: the disagreements queue a lead works through, and the
`--labels final|all|reviewer:NAME` option that export and metrics share."""

from __future__ import annotations

import argparse
import json

from labels import final
from labels.errors import LabelsError
from labels.store import Store


def label_choice(text: str) -> final.LabelChoice:
    try:
        return final.LabelChoice.parse(text)
    except LabelsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_labels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", default=final.LabelChoice(), type=label_choice,
                        metavar="final|all|reviewer:NAME",
                        help=f"which labels: {final.CHOICES_HELP}")


def add_disagreement_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("disagreements",
                                 help="examples whose reviewers disagree, for a lead to resolve")
    sub = parser.add_subparsers(dest="disagreements_command", required=True)
    listing = sub.add_parser("list", help="open disagreements (or --all), oldest first")
    listing.add_argument("--db", required=True)
    listing.add_argument("--all", action="store_true", help="resolved and settled ones too")
    listing.add_argument("--queue", help="only this queue's")
    listing.add_argument("--json", action="store_true")
    resolve = sub.add_parser("resolve", help="a lead's final label for an example, with why")
    resolve.add_argument("--db", required=True)
    resolve.add_argument("example", type=int, help="the example id `list` shows")
    resolve.add_argument("--lead", required=True, help="who decides (recorded)")
    resolve.add_argument("--verdict", required=True, help="safe or unsafe")
    resolve.add_argument("--categories", default="", help="codes such as S1,S10 (unsafe only)")
    resolve.add_argument("--none-fits", action="store_true",
                         help="unsafe, and none of the family's categories fits")
    resolve.add_argument("--reason", required=True, help="why (recorded)")
    resolve.add_argument("--json", action="store_true")


def run_disagreements(store: Store, args: argparse.Namespace) -> str:
    if args.disagreements_command == "resolve":
        decided = final.resolve(store, args.example, args.lead, args.verdict, args.categories,
                                args.reason, none_fits=args.none_fits)
        if args.json:
            return json.dumps(decided.to_json(), indent=2)
        return (f"Example {decided.example_id}: final label {_answer(decided)} by "
                f"{decided.decided_by} ({decided.reason})")
    found = final.disagreements(store, status=None if args.all else final.OPEN,
                                queue=args.queue)
    if args.json:
        return json.dumps([d.to_json() for d in found], indent=2)
    if not found:
        return "No open disagreements." if not args.all else "No disagreements."
    lines = []
    for d in found:
        votes = "; ".join(f"{lb['reviewer']}: {lb['label']}"
                          + (f" {','.join(lb['categories'])}" if lb["categories"] else "")
                          + (" (none fits)" if lb["none_fits"] else "") for lb in d.labels)
        where = f" in '{d.queue}'" if d.queue else ""
        lines.append(f"example {d.example_id}{where} [{d.status}]: {votes}")
    return "\n".join(lines)


def _answer(decided: final.FinalLabel) -> str:
    text = decided.label
    if decided.categories:
        text += " " + ",".join(decided.categories)
    return text + (" (none fits)" if decided.none_fits else "")
