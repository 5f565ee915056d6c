"""`python -m labels`: export, import and metrics over a Guard Lab database.

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

from guard.errors import GuardError

from .errors import LabelsError
from .export import FORMATS, export, import_jsonl
from .metrics import MetricsReport, evaluate
from .store import Store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporter = commands.add_parser("export", help="write the examples and labels to a file")
    exporter.add_argument("--db", required=True, help="the Guard Lab database")
    exporter.add_argument("--format", required=True, choices=FORMATS)
    exporter.add_argument("out", help="the file to write")
    importer = commands.add_parser("import", help="add a JSONL export to a database")
    importer.add_argument("--db", required=True)
    importer.add_argument("file", help="a JSONL file written by `export --format jsonl`")
    metrics = commands.add_parser("metrics", help="precision, recall, F1, FPR, AUPRC")
    metrics.add_argument("--db", required=True)
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics.add_argument("--target-fpr", type=float, default=0.05,
                         help="false-positive rate for the suggested threshold (default 0.05)")
    return parser


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
    if args.command != "import" and not Path(args.db).is_file():
        raise LabelsError(f"No database at {args.db}. Check the --db path.")
    with Store(args.db) as store:
        if args.command == "export":
            count = export(store, args.format, args.out)
            return f"Wrote {count} {'rows' if args.format == 'llama-guard' else 'examples'} " \
                   f"to {args.out}"
        if args.command == "import":
            result = import_jsonl(store, args.file)
            return (f"Imported {result.examples_added} examples ({result.examples_skipped} "
                    f"already there) and {result.labels_added} labels "
                    f"({result.labels_skipped} already there)")
        report = evaluate(store.metric_inputs(), target_fpr=args.target_fpr)
        return json.dumps(report.to_json(), indent=2) if args.json else format_report(report)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except (LabelsError, GuardError, ValueError, OSError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
