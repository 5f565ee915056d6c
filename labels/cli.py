"""`python -m labels`: export, import, metrics and review queues over a Guard Lab database.

Thin: each command opens a Store, calls one library function and prints. Library errors become
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from guard.core.errors import GuardError
from labels import queues
from labels.cli_final import add_disagreement_commands, add_labels_option, run_disagreements
from labels.cli_prompt_guard import (
    add_prompt_guard_commands,
    add_submit_option,
    parse_submit_option,
    run_prompt_guard,
)
from labels.errors import LabelsError
from labels.export import FORMATS, export, import_jsonl
from labels.filters import ReviewFilter
from labels.metrics import MetricsReport, evaluate
from labels.store import Store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporter = commands.add_parser("export", help="write the examples and labels to a file")
    exporter.add_argument("--db", required=True, help="the Guard Lab database")
    exporter.add_argument("--format", required=True, choices=FORMATS)
    exporter.add_argument("out", help="the file to write")
    add_labels_option(exporter)
    filters = exporter.add_argument_group("filters (export only the examples that match)")
    filters.add_argument("--label", help="some reviewer labelled it safe or unsafe")
    filters.add_argument("--category", help="some reviewer named this code")
    filters.add_argument("--reviewer", help="this reviewer labelled it")
    filters.add_argument("--model", help="judged by this model")
    filters.add_argument("--since", help="saved on or after this ISO date")
    filters.add_argument("--until", help="saved before this ISO date")
    filters.add_argument("--text", help="full-text search over conversations and notes")
    filters.add_argument("--reviewers-disagree", action="store_true",
                         help="reviewers gave it different verdicts or categories")
    importer = commands.add_parser("import", help="add a JSONL export to a database")
    importer.add_argument("--db", required=True)
    importer.add_argument("file", help="a JSONL file written by `export --format jsonl`")
    metrics = commands.add_parser("metrics", help="precision, recall, F1, FPR, AUPRC")
    metrics.add_argument("--db", required=True)
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics.add_argument("--target-fpr", type=float, default=0.05,
                         help="false-positive rate for the suggested threshold (default 0.05)")
    add_labels_option(metrics)
    add_queue_commands(commands)
    add_disagreement_commands(commands)
    add_prompt_guard_commands(commands)
    add_policy_commands(commands)
    return parser


def add_policy_commands(commands: argparse._SubParsersAction) -> None:
    policy = commands.add_parser("policy", help="policies: save a file as a new version, list, "
                                 "show, export")
    sub = policy.add_subparsers(dest="policy_command", required=True)
    save = sub.add_parser("save", help="save a JSON policy file as the next version of its name")
    save.add_argument("file", help="a policy JSON file (see the README's Policies)")
    save.add_argument("--db", required=True)
    save.add_argument("--by", default="", help="who saves it (recorded)")
    listing = sub.add_parser("list", help="every saved policy and its latest version")
    listing.add_argument("--db", required=True)
    listing.add_argument("--json", action="store_true")
    for name, text in (("show", "a policy's versions and its latest (or NAME@N) in full"),
                       ("export", "print a policy version as a file `save` and --policy read")):
        command = sub.add_parser(name, help=text)
        command.add_argument("name", metavar="NAME[@VERSION]")
        command.add_argument("--db", required=True)


def add_queue_commands(commands: argparse._SubParsersAction) -> None:
    queue = commands.add_parser("queue", help="review queues: fill, work, follow")
    sub = queue.add_subparsers(dest="queue_command", required=True)
    create = sub.add_parser("create", help="fill a queue from a stored run or a CSV/JSONL file")
    create.add_argument("--db", required=True)
    create.add_argument("name")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a stored evaluation run")
    source.add_argument("--file", help="a CSV or JSONL file of conversations to label")
    create.add_argument("--select", choices=queues.SELECTIONS, help="which rows of the run")
    create.add_argument("--other-run", help="with --select differs: the run to compare with")
    create.add_argument("--threshold", type=float, help="with --select uncertain (default: the "
                        "run's threshold), or Prompt Guard's threshold with --select "
                        "prompt-guard-false-negatives|prompt-guard-false-positives (default 0.9)")
    create.add_argument("--band", type=float, help="with --select uncertain: p_unsafe within "
                        "this distance of the threshold")
    create.add_argument("--dataset", help="the run's dataset file, if it has moved")
    create.add_argument("--format", default="jsonl", help="with --file: jsonl (default), csv, "
                        "xstest or openai-moderation")
    create.add_argument("--family", help="the Llama Guard family (default: from the run's "
                        "model; llama-guard-4 for a file)")
    create.add_argument("--model", default="", help="with --file: the model to record")
    create.add_argument("--exclude", default="", help="with --file: codes left out, e.g. S2,S3")
    create.add_argument("--overlap", type=int, default=1, help="reviewers per item (default 1)")
    listing = sub.add_parser("list", help="the queues and how far they are")
    listing.add_argument("--db", required=True)
    listing.add_argument("--json", action="store_true")
    for name, text in (("next", "lease the next item to a reviewer"),
                       ("submit", "label an item"), ("skip", "pass an item"),
                       ("progress", "labelled and skipped counts")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--db", required=True)
        command.add_argument("queue")
        if name in ("submit", "skip"):
            command.add_argument("item", type=int, help="the item id `next` gave")
        command.add_argument("--reviewer", required=name != "progress")
        command.add_argument("--json", action="store_true")
    submit = sub.choices["submit"]
    submit.add_argument("--verdict", required=True, help="safe or unsafe")
    submit.add_argument("--categories", default="", help="codes such as S1,S10 (unsafe only)")
    submit.add_argument("--note", default="")
    submit.add_argument("--none-fits", action="store_true",
                        help="unsafe, and none of the family's categories fits")
    add_submit_option(submit)


def format_report(report: MetricsReport) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    data = report.to_json()
    c = report.confusion
    lines = [f"labels     {report.n}"]
    lines += [f"{name:<10} {pct(data[key])}" for name, key in
              (("precision", "precision"), ("recall", "recall"), ("f1", "f1"),
               ("fpr", "fpr"), ("auprc", "auprc"))]
    lines += ["", "confusion  pred safe  pred unsafe",
              f"gold safe  {c.tn:>9}  {c.fp:>11}", f"gold unsafe{c.fn:>9}  {c.tp:>11}"]
    if data["suggested_threshold"]:
        s = data["suggested_threshold"]
        lines += ["", f"threshold for FPR <= {s['target_fpr']}: {s['threshold']:.4f} "
                      f"(fpr {s['fpr']:.3f}, recall {s['recall']:.3f})"]
    rows = [r for r in data["categories"] if r["positives"] or r["fpr"]]
    if rows:
        lines += ["", f"{'category':<8} {'gold+':>6}  {'fnr':>5}  {'fpr':>5}"]
        lines += [f"{r['code']:<8} {r['positives']:>6}  {pct(r['fnr']):>5}  {pct(r['fpr']):>5}"
                  for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    creates = args.command == "import" or getattr(args, "file", None) is not None
    if not creates and not Path(args.db).is_file():
        raise LabelsError(f"No database at {args.db}. Check the --db path.")
    if args.command == "queue" and creates and not Path(args.file).is_file():
        raise LabelsError(f"No file at {args.file}. Check the --file path.")
    if args.command == "policy":
        return run_policy(args)
    with Store(args.db) as store:
        if args.command == "queue":
            return run_queue(store, args)
        if args.command == "export":
            count = export(store, args.format, args.out, export_filter(args), labels=args.labels)
            rows = args.format in ("llama-guard", "prompt-guard")
            return f"Wrote {count} {'rows' if rows else 'examples'} " \
                   f"to {args.out}"
        if args.command == "import":
            result = import_jsonl(store, args.file)
            return (f"Imported {result.examples_added} examples ({result.examples_skipped} "
                    f"already there) and {result.labels_added} labels "
                    f"({result.labels_skipped} already there)")
        if args.command == "disagreements":
            return run_disagreements(store, args)
        if args.command == "prompt-guard":
            return run_prompt_guard(store, args)
        report = evaluate(store.metric_inputs(labels=args.labels), target_fpr=args.target_fpr)
        return json.dumps(report.to_json(), indent=2) if args.json else format_report(report)


def export_filter(args: argparse.Namespace) -> ReviewFilter | None:
    values = {name: getattr(args, name) for name in
              ("label", "category", "reviewer", "model", "since", "until", "text")}
    values = {k: v for k, v in values.items() if v is not None}
    if args.reviewers_disagree:
        values["reviewers_disagree"] = True
    return ReviewFilter(**values) if values else None


def run_policy(args: argparse.Namespace) -> str:
    from guard.core.policy import read_policy_file
    from labels import policies

    command = args.policy_command
    policy = read_policy_file(args.file) if command == "save" else None  # before the database
    with Store(args.db) as store:
        if policy is not None:
            saved = policies.save(store, policy, by=args.by)
            if not saved.new:
                return f"Unchanged: {saved.policy.label} already says this (no new version)."
            return f"Saved {saved.policy.label}."
        if command == "list":
            found = policies.list_policies(store)
            if args.json:
                return json.dumps([p.to_json() for p in found], indent=2)
            return "\n".join(f"{p.label}  ({p.versions} version{'s' * (p.versions != 1)}, "
                             f"last saved {p.updated_at})" for p in found) or \
                "No policies yet. Save one with `python -m labels policy save FILE --db DB`."
        saved = policies.get_saved(store, args.name)
        if command == "export":
            return json.dumps(saved.policy.to_json(), indent=2)
        history = policies.versions(store, saved.policy.name)
        lines = [f"{saved.policy.label} (saved {saved.created_at}"
                 f"{' by ' + saved.created_by if saved.created_by else ''})",
                 "versions: " + ", ".join(str(v.policy.version) for v in history),
                 json.dumps(saved.policy.to_json(), indent=2)]
        return "\n".join(lines)


def run_queue(store: Store, args: argparse.Namespace) -> str:
    command = args.queue_command
    if command == "create":
        return create_queue(store, args)
    if command == "list":
        found = queues.list_queues(store)
        if args.json:
            return json.dumps([q.to_json() for q in found], indent=2)
        return "\n".join(f"{q.name}: {q.complete} of {q.items} complete, overlap {q.overlap}, "
                         f"{q.family}, {q.model}" for q in found) or "No queues yet."
    if command == "next":
        item = queues.next_item(store, args.queue, args.reviewer)
        if item is None:
            done = queues.progress(store, args.queue, args.reviewer).sentence
            return json.dumps(None) if args.json else \
                f"Nothing left for {args.reviewer} in '{args.queue}' ({done})."
        return json.dumps(item.to_json(), indent=2) if args.json else format_item(item)
    if command == "progress":
        result = queues.progress(store, args.queue, args.reviewer)
        return json.dumps(result.to_json(), indent=2) if args.json else result.sentence
    if command == "submit":
        outcome = queues.submit(store, args.queue, args.item, args.reviewer, args.verdict,
                                args.categories, args.note, none_fits=args.none_fits,
                                prompt_guard=parse_submit_option(args.prompt_guard))
    else:
        outcome = queues.skip(store, args.queue, args.item, args.reviewer)
    if args.json:
        return json.dumps(outcome.to_json(), indent=2)
    what = (f"labelled (example {outcome.example_id}, label {outcome.label_id}, "
            f"{outcome.label_action})" if outcome.status == queues.LABELLED else "skipped")
    return f"Item {outcome.item_id} {what}; " \
           f"{queues.progress(store, args.queue, args.reviewer).sentence}"


def create_queue(store: Store, args: argparse.Namespace) -> str:
    run_only = ("select", "other_run", "threshold", "band", "dataset")
    if args.run is not None:
        if args.select is None:
            raise LabelsError(f"Say which rows of run '{args.run}' to queue: --select "
                              f"{'|'.join(queues.SELECTIONS)}.")
        if args.model or args.exclude:
            raise LabelsError("--model and --exclude go with --file; a run's queue takes them "
                              "from the run.")
        fill = queues.create_from_run(
            store, args.name, args.run, args.select, other_run=args.other_run,
            threshold=args.threshold, band=args.band, overlap=args.overlap, family=args.family,
            dataset=args.dataset)
    else:
        given = [f"--{n.replace('_', '-')}" for n in run_only if getattr(args, n) is not None]
        if given:
            raise LabelsError(f"{', '.join(given)} go with --run, not --file.")
        fill = queues.create_from_file(
            store, args.name, args.file, format=args.format,
            family=args.family or "llama-guard-4", model=args.model, excluded=args.exclude,
            overlap=args.overlap)
    return fill.summary


def format_item(item: queues.QueueItem) -> str:
    lines = [f"item {item.id} (position {item.position} in '{item.queue}')"]
    for message in item.messages:
        text = " ".join(p.get("text") or "[image]" for p in message["content"])
        lines.append(f"{message['role']:>9}: {text}")
    answer = item.error and f"failed: {item.error}" or item.verdict or "not judged"
    if item.categories:
        answer += " " + ",".join(item.categories)
    if item.p_unsafe is not None:
        answer += f" (p_unsafe {item.p_unsafe:.3f}, threshold {item.threshold:g})"
    lines += [f"    model: {item.model}: {answer}", f"    codes: {', '.join(item.codes)}"]
    if item.prompt_guard:
        scores = ", ".join(f"message {int(i) + 1}: {float(p):.3f}"
                           for i, p in sorted(item.prompt_guard["scores"].items(),
                                              key=lambda kv: int(kv[0])))
        lines.append(f"    prompt guard: {item.prompt_guard['model'] or 'unnamed'}: {scores}")
    if item.prompt_guard_required:
        lines.append("    label user message(s) "
                     f"{', '.join(str(i + 1) for i in item.user_messages)} with --prompt-guard")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except (LabelsError, GuardError, ValueError, OSError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
