"""`python -m guard.eval`: evaluate a dataset into a named run, print and save the metrics.

Bad input ends with exit status 2 and one line on stderr. A run that is stopped keeps every
finished batch; the same command again resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from guard.cli_edge import run_command
from guard.core.categories import parse_codes
from guard.core.datasets import FORMATS, Dataset, read_dataset
from guard.core.verdict import parse_answer
from guard.eval.errors import EvalError
from guard.eval.prompt_guard_eval import (
    DEFAULT_THRESHOLD,
    run_attack_report,
    stored_attack,
    with_windows,
)
from guard.eval.prompt_guard_metrics import TARGET_FPRS, AttackReport, ScoredMessage
from guard.eval.report import EvalReport, build_report, compare, format_comparison, format_report
from guard.eval.runner import DEFAULT_BATCH_SIZE, ProgressHook, check_batch_size, evaluate_dataset
from guard.versions import check_or_exit
from labels.errors import LabelsError
from labels.runs import Runs
from labels.store import Store

MAX_BAD_ROWS_SHOWN = 20


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the contract for bad input.
        self.exit(2, f"error: {message} (see python -m guard.eval --help)\n")


def _parser() -> argparse.ArgumentParser:
    from guard.cli import add_model_arguments

    p = _Parser(prog="python -m guard.eval",
                description="Evaluate Llama Guard and Prompt Guard over a labelled dataset.")
    p.add_argument("data", nargs="?", type=Path, metavar="DATA",
                   help="CSV or JSONL file (or --labelled-examples DB instead)")
    p.add_argument("--format", choices=FORMATS, help="how to read DATA")
    p.add_argument("--labelled-examples", type=Path, metavar="DB", dest="labelled_examples",
                   help="instead of DATA: the final-labelled examples of this labels database "
                        "(one user message and an optional answer each), as Batch evaluation's "
                        "'Labelled examples'; the same labels resume the same run")
    p.add_argument("--out", type=Path, required=True, metavar="DB",
                   help="the Guard Lab database that keeps the run")
    p.add_argument("--name", metavar="RUN",
                   help="run name (default: made from the dataset and settings)")
    p.add_argument("--exclude", default=None, help="category codes left out, e.g. S1,S2")
    p.add_argument("--threshold", type=float, default=None, help="flag p_unsafe >= this (0.5)")
    p.add_argument("--policy", metavar="NAME|FILE",
                   help="a policy saved in the --out database (NAME or NAME@VERSION) or a JSON "
                        "file: its categories, threshold and Prompt Guard; the run records it")
    p.add_argument("--sweep-categories", action="store_true",
                   help="also run the policy with each enabled category left out, each variant "
                        "a stored run, and print one table")
    p.add_argument("--only-one", action="store_true",
                   help="with --sweep-categories: also each category alone")
    p.add_argument("--save-variant", metavar="CODE",
                   help="with --sweep-categories and a policy: save the variant without CODE "
                        "(or 'only-CODE') as a policy in the --out database")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N good rows")
    add_model_arguments(p)
    p.add_argument("--concurrency", type=int, dest="openai_concurrency", metavar="N",
                   help="--engine openai: requests in flight at most, 1 to 512; a busy server "
                        "(HTTP 429/503) lowers it for a while (env GUARD_LAB_OPENAI_CONCURRENCY; "
                        "default 16)")
    p.add_argument("--prompt-guard-threshold", type=float, default=None, metavar="T",
                   help="with an attack column: Prompt Guard flags score >= T in its report "
                        f"(default {DEFAULT_THRESHOLD:g}, LlamaFirewall's)")
    p.add_argument("--target-fpr", default=None, metavar="F[,F...]",
                   help="with an attack column: suggest Prompt Guard thresholds for these "
                        f"false-positive rates (default {','.join(f'{t:g}' for t in TARGET_FPRS)})")
    p.add_argument("--report", type=Path, metavar="REPORT.json", help="write the metrics here")
    p.add_argument("--predictions", type=Path, metavar="PRED.jsonl",
                   help="write one JSON line per row here")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="print two stored runs side by side (no model is loaded)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    check_or_exit(("torch", "transformers"))
    return run_command(lambda: _compare(args) if args.compare else (
        _evaluate_policy(args) if args.policy or args.sweep_categories else _evaluate(args)),
                       refused=(LabelsError,), database=args.out,
                       resume="finished batches are stored; run the same command to resume.")


def _evaluate(args: argparse.Namespace) -> int:
    _check_source(args, "")
    if args.threshold is None:
        args.threshold = 0.5
    if not 0.0 <= args.threshold <= 1.0:
        raise EvalError(f"--threshold must be between 0 and 1, got {args.threshold}.")
    if args.only_one or args.save_variant:
        raise EvalError("--only-one and --save-variant go with --sweep-categories.")
    if args.batch_size < 1:
        raise EvalError(f"--batch-size must be 1 or more, got {args.batch_size}.")
    pg_threshold, targets = _prompt_guard_options(args)
    dataset = _read_checked(args)
    from guard.cli import _quiet_transformers, load_guards

    _quiet_transformers()
    with Store(args.out) as store:
        runs = Runs(store)
        guards = load_guards(args)
        dataset = _labelled(args, store, guards) if dataset is None else dataset
        progress, close = _progress_bar()
        try:
            outcome = evaluate_dataset(
                dataset, guards, runs, name=args.name, excluded=parse_codes(args.exclude or ""),
                threshold=args.threshold, batch_size=args.batch_size, limit=args.limit,
                progress=progress)
        finally:
            close()
        report = _with_attack(build_report(outcome.run, runs.results(outcome.run.id)), dataset,
                              guards, pg_threshold, targets, runs)
    if outcome.resumed:
        print(f"resumed run '{outcome.run.name}': {outcome.skipped} rows were already done, "
              f"{outcome.judged} judged now", file=sys.stderr)
    print(format_report(report))
    _print_attack(report, dataset)
    _write_outputs(args, report, dataset)
    return 0


def _print_attack(report: EvalReport, dataset: Dataset) -> None:
    if report.prompt_guard_attack is not None:
        print(report.prompt_guard_attack.sentence)
        for warning in report.prompt_guard_attack.messages.warnings:
            print(f"warning: Prompt Guard: {warning}", file=sys.stderr)
    elif dataset.has_attack:
        print("warning: the dataset has an attack column but Prompt Guard was not run "
              "(--prompt-guard none): no Prompt Guard figures.", file=sys.stderr)


def _with_attack(report: EvalReport, dataset: Dataset, guards: Any, threshold: float,
                 targets: tuple[float, ...], runs: Runs) -> EvalReport:
    """The report with Prompt Guard's figures against the dataset's attack column, both levels:
    the attack labels and window scores the run stored, or for rows stored without them (before
    migration m008) the dataset's labels and a Prompt Guard pass; as it was without the column
    or the model."""
    if not dataset.has_attack or guards.prompt_guard is None:
        return report
    found = stored_attack(runs, report.run, report.results, dataset=dataset)
    judged = {r.row_id for r in report.results}
    found = with_windows(found, report.results, guards.prompt_guard.score_many,
                         {r.row_id: r.prompt for r in dataset.rows if r.row_id in judged})
    return replace(report, prompt_guard_attack=run_attack_report(
        report.run, report.results, found.labels, found.windows, threshold=threshold,
        target_fprs=targets))


def _prompt_guard_options(args: argparse.Namespace) -> tuple[float, tuple[float, ...]]:
    """--prompt-guard-threshold and --target-fpr, checked."""
    threshold = DEFAULT_THRESHOLD if args.prompt_guard_threshold is None \
        else args.prompt_guard_threshold
    if not 0.0 <= threshold <= 1.0:  # also NaN
        raise EvalError(f"--prompt-guard-threshold must be between 0 and 1, got {threshold}.")
    if args.target_fpr is None:
        return threshold, TARGET_FPRS
    targets = []
    for part in args.target_fpr.split(","):
        try:
            value = float(part)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise EvalError(f"--target-fpr takes rates from 0 to 1 separated by commas, such as "
                            f"0.01,0.05; got {part.strip()!r}.")
        targets.append(value)
    return threshold, tuple(targets)


def _evaluate_policy(args: argparse.Namespace) -> int:
    """--policy and/or --sweep-categories: each variant a stored run (guard.eval.sweep)."""
    from guard.cli import _quiet_transformers
    from guard.engines import loading
    from guard.eval import sweep
    from labels import policies

    _check_source(args, " --policy NAME|FILE")
    if (args.only_one or args.save_variant) and not args.sweep_categories:
        raise EvalError("--only-one and --save-variant go with --sweep-categories.")
    if args.policy and args.prompt_guard_threshold is not None:
        raise EvalError("--prompt-guard-threshold cannot go with --policy: the policy sets "
                        "Prompt Guard's threshold. Leave it out, or save a policy that says "
                        "what you want.")
    dataset = _read_checked(args)
    _quiet_transformers()
    with Store(args.out) as store:
        runs = Runs(store)
        if args.policy and not Path(args.policy).is_file() \
                and not args.policy.endswith(".json"):
            if args.exclude is not None or args.threshold is not None:
                raise EvalError("--exclude and --threshold cannot go with --policy: the policy "
                                "sets them. Leave them out, or save a policy that says what "
                                "you want.")
            policy = policies.get(store, args.policy)
        else:
            policy = loading.policy_of_flags(args.policy, exclude=args.exclude,
                                             threshold=args.threshold)
        found = sweep.variants(policy, sweep=args.sweep_categories, only_one=args.only_one)
        saving = _variant_to_save(args.save_variant, policy, found)
        options = loading.engine_options(args, os.environ)
        guards = loading.load_guards(loading.with_policy(options, policy))
        dataset = _labelled(args, store, guards) if dataset is None else dataset
        progress, close = _progress_bar()
        try:
            outcome = sweep.sweep_dataset(dataset, guards, runs, found, name=args.name,
                                          batch_size=args.batch_size, limit=args.limit,
                                          progress=progress)
        finally:
            close()
        table = sweep.sweep_table(outcome, runs)
        attack_threshold = policy.prompt_guard.threshold if args.policy \
            else _prompt_guard_options(args)[0]
        first = _with_attack(table[0].report, dataset, guards, attack_threshold,
                             _prompt_guard_options(args)[1], runs)
        saved = policies.save(store, saving) if saving is not None else None
    for vr in outcome.runs:
        if vr.resumed:
            print(f"resumed run '{vr.run.name}': {vr.skipped} rows were already done, "
                  f"{vr.judged} judged now", file=sys.stderr)
    if args.sweep_categories:
        print(sweep.format_table(table))
    else:
        print(format_report(first))
    _print_attack(first, dataset)
    if saved is not None:
        print(f"{'Saved' if saved.new else 'Unchanged:'} {saved.policy.label}"
              f"{'' if saved.new else ' already says this'}.")
    if args.report:
        data = first.to_json()
        data["bad_rows"] = [{"line": b.line, "message": b.message} for b in dataset.bad_rows]
        if args.sweep_categories:
            data["sweep"] = [row.to_json() for row in table]
        _write(args.report, json.dumps(data, indent=2) + "\n")
    if args.predictions:  # the policy decided the verdicts: the model's answer goes beside
        attack = _by_id(first.prompt_guard_attack)
        _write(args.predictions, "".join(json.dumps(prediction(r, attack, policy=True)) + "\n"
                                         for r in first.results))
    return 0


def _variant_to_save(spec: str | None, policy: Any, found: list[Any]) -> Any:
    """The variant `--save-variant` names ("S6": without S6; "only-S6"), as a policy to save."""
    if spec is None:
        return None
    if policy.ad_hoc:
        raise EvalError("--save-variant needs --policy: a variant is saved as that policy "
                        "with one category more left out (or alone).")
    code = spec.strip().upper()
    name = f"only {code[5:]}" if code.startswith("ONLY-") else f"without {code}"
    for variant in found:
        if variant.name == name:
            return variant.policy
    names = ", ".join(v.name.replace("without ", "").replace("only ", "only-")
                      for v in found[1:]) or "none"
    raise EvalError(f"No sweep variant '{name}' to save (variants: {names}).")


def _compare(args: argparse.Namespace) -> int:
    with Store(args.out) as store:
        runs = Runs(store)
        reports = []
        for name in args.compare:
            run = runs.get(name)
            results = runs.results(run.id)
            # Stored with the run; a run stored before m008 reads its dataset's, when the same.
            found = stored_attack(runs, run, results)
            reports.append(build_report(run, results, attack=found.labels,
                                        windows=found.windows))
    comparison = compare(*reports)
    print(format_comparison(comparison))
    if args.report:
        _write(args.report, json.dumps(comparison.to_json(), indent=2) + "\n")
    return 0


def _check_source(args: argparse.Namespace, command: str) -> None:
    """DATA with --format, or --labelled-examples DB: one of them."""
    if args.labelled_examples is not None:
        if args.data is not None:
            raise EvalError(f"Give DATA or --labelled-examples DB, not both (got {args.data} and "
                            f"--labelled-examples {args.labelled_examples}).")
        if args.format is not None:
            raise EvalError("--format goes with a DATA file; --labelled-examples reads the "
                            "database's labelled examples as they are. Leave --format out.")
        if not Path(args.labelled_examples).is_file():
            raise EvalError(f"--labelled-examples {args.labelled_examples}: no such labels "
                            "database. Name the file that keeps the labels (python -m labels "
                            "... --db DB).")
        return
    if args.data is None or args.format is None:
        # The message as before (scripts read it); --help names --labelled-examples DB.
        raise EvalError("Name the dataset and its format: python -m guard.eval DATA --format "
                        f"{'|'.join(FORMATS)} --out DB{command}.")


def _labelled(args: argparse.Namespace, store: Store, guards: Any) -> Dataset:
    """--labelled-examples: the examples of the loaded Llama Guard's family, as the page's
    "Labelled examples" writes them (guard.eval.labelled); the --out store when it is the same
    database."""
    from guard.eval.labelled import labelled_examples

    if guards.llama_guard is None:
        raise EvalError("--labelled-examples needs Llama Guard loaded: its family picks the "
                        "examples.")
    family = guards.llama_guard.family
    if Path(args.labelled_examples).resolve() == Path(args.out).resolve():
        dataset = labelled_examples(store, family)
    else:
        with Store(args.labelled_examples) as labels_store:
            dataset = labelled_examples(labels_store, family)
    for bad in dataset.bad_rows:
        print(f"warning: --labelled-examples: {bad.message}", file=sys.stderr)
    print(f"--labelled-examples: {len(dataset.rows)} examples in {dataset.path}",
          file=sys.stderr)
    return dataset


def _read_checked(args: argparse.Namespace) -> Dataset | None:
    """The dataset, once the batch size and the limit are checked (before it is read); None
    for --labelled-examples, read once the model (its family) is loaded (`_labelled`)."""
    check_batch_size(args.batch_size)
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be 1 or more, got {args.limit}.")
    if args.labelled_examples is not None:
        return None
    dataset = read_dataset(args.data, args.format)
    _warn_bad_rows(dataset)
    if not dataset.rows:
        raise EvalError(f"{args.data}: no usable rows ({len(dataset.bad_rows)} bad). Fix the file.")
    return dataset


def _warn_bad_rows(dataset: Dataset) -> None:
    for bad in dataset.bad_rows[:MAX_BAD_ROWS_SHOWN]:
        print(f"warning: {dataset.path}: {bad}; row skipped", file=sys.stderr)
    if len(dataset.bad_rows) > MAX_BAD_ROWS_SHOWN:
        print(f"warning: {len(dataset.bad_rows) - MAX_BAD_ROWS_SHOWN} more bad rows skipped "
              "(all are listed in the report)", file=sys.stderr)


def _write_outputs(args: argparse.Namespace, report: EvalReport, dataset: Dataset) -> None:
    if args.report:
        data = report.to_json()
        data["bad_rows"] = [{"line": b.line, "message": b.message} for b in dataset.bad_rows]
        _write(args.report, json.dumps(data, indent=2) + "\n")
    if args.predictions:
        attack = _by_id(report.prompt_guard_attack)
        _write(args.predictions, "".join(json.dumps(prediction(r, attack)) + "\n"
                                         for r in report.results))


def _by_id(report: AttackReport | None) -> dict[str, ScoredMessage] | None:
    return None if report is None else {m.row_id: m for m in report.rows}


def prediction(result: Any, attack: Mapping[str, ScoredMessage] | None = None, *,
               policy: bool = False) -> dict[str, Any]:
    """One row's line; with Prompt Guard's scored messages (by row id, when the dataset has an
    attack column), also its attack label and the score of each window of its prompt (null
    where not known). Under a policy (`policy`: `verdict` is the policy's decision), also
    `model_answer`: what Llama Guard said (its label, every code it named, p_unsafe), null for
    a failed row."""
    gold = None if result.gold is None else ("unsafe" if result.gold else "safe")
    line = {"id": result.row_id, "gold": gold, "verdict": result.verdict,
            "p_unsafe": result.p_unsafe, "categories": list(result.categories),
            "gold_categories": list(result.gold_categories), "p_malicious": result.p_malicious,
            "error": result.error}
    if attack is not None:
        message = attack.get(result.row_id)
        line["attack"] = None if message is None else message.malicious
        line["window_scores"] = (list(message.window_scores)
                                 if message is not None and message.window_scores else None)
    if policy:
        said = parse_answer(result.raw_output or "")
        line["model_answer"] = None if result.verdict is None else {
            "label": said.label, "named": list(said.codes), "p_unsafe": result.p_unsafe}
    return line


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EvalError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def _progress_bar() -> tuple[ProgressHook, Callable[[], None]]:
    """A tqdm bar on stderr when tqdm is installed and stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        return (lambda done, total: None), (lambda: None)
    bar = tqdm(total=0, unit="row", desc="evaluating", disable=None, file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close
