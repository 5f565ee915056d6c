"""`python -m guard.tune prompt-guard`: tune Prompt Guard 2 on its labels, then before/after.

    python -m guard.tune prompt-guard --db guard_lab.db --base 22m --out tuned/pg-22m-v1
    python -m guard.tune prompt-guard --data pg.jsonl --base 86m --method lora --out tuned/pg-lora

A killed run keeps its last checkpoint: the same command again resumes from it. The same
command on a finished folder scores its held-out messages again (a later compare). Serve the
folder with `--prompt-guard DIR` on the app, `python -m guard` and `python -m guard.eval`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from guard.tune.errors import TuneError
from guard.tune.prompt_guard_data import MIN_EXAMPLES, MIN_PER_CLASS, PGData, from_jsonl


def add_parser(sub: Any) -> None:
    from guard.core.prompt_guard_text import PREPROCESSING
    from guard.engines.loading import DEFAULT_PROMPT_GUARD
    from guard.engines.tuned_prompt_guard import METHODS
    from guard.tune.prompt_guard import PGSettings

    d = PGSettings()
    p = sub.add_parser("prompt-guard", help="tune Prompt Guard 2 on its labels (full or LoRA; "
                                            "resumes a run left in --out)",
                       description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", type=Path, metavar="DB",
                        help="a Guard Lab database with Prompt Guard labels")
    source.add_argument("--data", type=Path, metavar="FILE.jsonl",
                        help='{"text", "label"} rows (python -m labels export --format '
                             "prompt-guard); label 0/1 or benign/malicious")
    p.add_argument("--labels", default="final", metavar="final|all|reviewer:NAME",
                   help="with --db, which Prompt Guard labels to learn: each message's final "
                        "label; the messages whose reviewers agree; or one reviewer's")
    p.add_argument("--base", "--prompt-guard", dest="base",
                   default=os.environ.get("GUARD_LAB_PROMPT_GUARD", DEFAULT_PROMPT_GUARD),
                   help="the Prompt Guard to tune: 86m, 22m, a hub id or a folder "
                        "(env GUARD_LAB_PROMPT_GUARD)")
    p.add_argument("--revision", default=None, help="hub revision of --base")
    p.add_argument("--tiny", action="store_true", help="the offline tiny Prompt Guard 2")
    p.add_argument("--device", default=os.environ.get("GUARD_LAB_DEVICE", "auto"))
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the tuned folder")
    p.add_argument("--name", help="the tuned model's name (default: the folder's name)")
    p.add_argument("--method", choices=METHODS, default=d.method,
                   help="full: every weight; lora: a LoRA adapter (PEFT) on the attention's "
                        "query/key/value projections, with the classifier head trained whole")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eval-fraction", type=float, default=d.eval_fraction,
                   help="share of each class held out to measure")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: 2e-5 full, 2e-4 lora)")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides epochs)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--grad-accum", type=int, default=d.gradient_accumulation,
                   help="batches per optimizer step")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--target-modules", default=",".join(d.target_modules),
                   help="lora: comma-separated module names to adapt")
    p.add_argument("--save-steps", type=int, default=d.save_steps, help="checkpoint every N steps")
    p.add_argument("--preprocessing", choices=PREPROCESSING, default=d.preprocessing,
                   help="how messages are read before tokenizing, as in a policy (llamafirewall "
                        "collapses I g n o r e)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="score at which a message counts as malicious in the before/after")
    p.add_argument("--min-examples", type=int, default=MIN_EXAMPLES, metavar="N")
    p.add_argument("--min-per-class", type=int, default=MIN_PER_CLASS, metavar="N")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--report", type=Path, metavar="REPORT.json",
                   help="write the before/after (every held-out message's scores) here too")


def read_data(args: argparse.Namespace) -> PGData:
    if args.db is not None:
        from guard.tune.prompt_guard_data import from_store
        from labels.store import Store

        if not args.db.is_file():
            raise TuneError(f"No database at {args.db}.")
        with Store(args.db) as store:
            return from_store(store, labels=args.labels)
    if args.labels != "final":
        raise TuneError("--labels goes with --db: a data file holds the labels it was written "
                        "with.")
    return from_jsonl(args.data)


def _summary(data: PGData) -> str:
    counts = data.counts
    skipped = "".join(f"; {n} {why}" for why, n in sorted(data.skipped.items()))
    return (f"{data.path}: {len(data.examples)} labelled messages ({counts['benign']} benign, "
            f"{counts['malicious']} malicious){skipped}")


def _load_base(args: argparse.Namespace) -> Any:
    from guard.engines.prompt_guard import PromptGuard
    from guard.engines.tuned_prompt_guard import is_tuned_folder

    if args.tiny:
        from guard.engines.loading import default_tiny_dir
        from guard.testing.tiny import build_tiny_models

        return PromptGuard.load(build_tiny_models(default_tiny_dir())[1], device="cpu")
    if is_tuned_folder(args.base):
        raise TuneError(f"--base {args.base} is a tuned Prompt Guard; tune from its base (the "
                        "one its guard_lab_prompt_guard.json names).")
    return PromptGuard.load(args.base, device=args.device, revision=args.revision)


def run(args: argparse.Namespace) -> int:
    from guard.tune.prompt_guard import PGSettings, tune_prompt_guard
    from guard.tune.prompt_guard_compare import format_before_after
    from guard.tune.prompt_guard_data import check_usable

    settings = PGSettings(
        method=args.method, seed=args.seed, eval_fraction=args.eval_fraction,
        learning_rate=args.lr, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, gradient_accumulation=args.grad_accum,
        weight_decay=args.weight_decay, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=tuple(m.strip() for m in args.target_modules.split(",") if m.strip()),
        save_steps=args.save_steps, preprocessing=args.preprocessing, threshold=args.threshold)
    settings.check()
    data = read_data(args)  # refuse too few labels before loading a model
    print(_summary(data), file=sys.stderr)
    check_usable(data, min_examples=args.min_examples, min_per_class=args.min_per_class)
    base = _load_base(args)

    def progress(step: int, total: int, loss: float) -> None:
        print(f"step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

    result = tune_prompt_guard(base, data, args.out, settings, name=args.name, progress=progress,
                               keep_checkpoints=args.keep_checkpoints,
                               min_examples=args.min_examples, min_per_class=args.min_per_class)
    meta = result.metadata
    if result.already_finished:
        print(f"{args.out} is finished; its held-out messages scored again", file=sys.stderr)
        if result.dropped:
            print(f"left out: {len(result.dropped)} held-out messages no longer labelled "
                  f"({', '.join(result.dropped[:10])})")
    else:
        if result.resumed_from_step:
            print(f"resumed from step {result.resumed_from_step}", file=sys.stderr)
        metrics = meta["metrics"]
        per_epoch = metrics["seconds_per_epoch"]
        print(f"tuned {meta['name']}@{meta['weights_sha256'][:8]} ({meta['method']}) in "
              f"{result.folder}: {metrics['steps']} steps, train loss "
              f"{metrics['train_loss']:.4f}"
              + (f", {per_epoch:.1f} s/epoch" if per_epoch else ""))
    print(format_before_after(result.before_after, f"{meta['name']} held-out"))
    print(f"serve it: --prompt-guard {result.folder}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result.before_after.to_json(), indent=2) + "\n",
                               encoding="utf-8")
    return 0
