"""`python -m guard.tune`: tune a LoRA adapter on a Guard Lab database, compare it with the base.

    python -m guard.tune check   --db guard_lab.db
    python -m guard.tune train   --db guard_lab.db --out adapters/policy-v1
    python -m guard.tune compare --db guard_lab.db --adapter adapters/policy-v1
    python -m guard.tune prompt-guard --db guard_lab.db --base 22m --out tuned/pg-v1

Bad input ends with exit status 2 and one line on stderr. A killed `train` keeps its last
checkpoint: the same command again resumes from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from guard.cli_edge import run_command
from guard.core.categories import Family, guess_family
from guard.tune.data import (
    MIN_EXAMPLES,
    MIN_PER_CLASS,
    TuneData,
    check_usable,
    from_export,
    from_store,
)
from guard.tune.errors import TuneError
from guard.versions import check_or_exit
from labels.errors import LabelsError
from labels.final import CHOICES_HELP, FINAL
from labels.store import Store


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see python -m guard.tune --help)\n")


def _model_arguments(p: argparse.ArgumentParser) -> None:
    from guard.engines.loading import DEFAULT_LLAMA_GUARD
    from guard.engines.quantize import QUANTIZE

    p.add_argument("--model", default=os.environ.get("GUARD_LAB_LLAMA_GUARD", DEFAULT_LLAMA_GUARD),
                   help="the base Llama Guard: hub id or local folder")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    p.add_argument("--tiny", action="store_true", help="the offline tiny Llama Guard 4")
    p.add_argument("--device", default=os.environ.get("GUARD_LAB_DEVICE", "auto"))
    p.add_argument("--family", choices=[f.value for f in Family], default=None,
                   help="prompt format (default: guessed from the model name)")
    p.add_argument("--quantize", choices=QUANTIZE,
                   default=(os.environ.get("GUARD_LAB_QUANTIZE") or "none").strip().lower(),
                   help="quantize the base's decoder as it loads (int8, fp8, nf4: QLoRA-style "
                        "tuning on a 24 GB card; env GUARD_LAB_QUANTIZE)")


def _data_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", type=Path, metavar="DB", help="a Guard Lab database")
    source.add_argument("--export", type=Path, metavar="FILE.jsonl",
                        help="a `python -m labels export --format llama-guard` file")
    p.add_argument("--min-examples", type=int, default=MIN_EXAMPLES, metavar="N")
    p.add_argument("--min-per-class", type=int, default=MIN_PER_CLASS, metavar="N")
    p.add_argument("--labels", default=FINAL, metavar="final|all|reviewer:NAME",
                   help=f"with --db, which labels to learn: {CHOICES_HELP}")


def _parser() -> argparse.ArgumentParser:
    from guard.tune.train import TuneSettings

    d = TuneSettings()
    p = _Parser(prog="python -m guard.tune", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="count the usable labelled examples; no model is loaded")
    _data_arguments(c)
    _model_arguments(c)

    t = sub.add_parser("train", help="tune a LoRA adapter (resumes a run left in --out)")
    _data_arguments(t)
    _model_arguments(t)
    t.add_argument("--out", type=Path, required=True, metavar="DIR", help="the adapter folder")
    t.add_argument("--name", help="the adapter's name (default: the folder's name)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--eval-fraction", type=float, default=d.eval_fraction,
                   help="share of each class held out to measure")
    t.add_argument("--lr", type=float, default=d.learning_rate, help="learning rate")
    t.add_argument("--epochs", type=float, default=d.epochs)
    t.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides epochs)")
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--grad-accum", type=int, default=d.gradient_accumulation,
                   help="batches per optimizer step")
    t.add_argument("--lora-r", type=int, default=d.lora_r)
    t.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    t.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    t.add_argument("--target-modules", default=",".join(d.target_modules),
                   help="comma-separated module names to adapt (language model only)")
    t.add_argument("--save-steps", type=int, default=d.save_steps, help="checkpoint every N steps")
    t.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass (less memory, ~30%% slower)")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: when the model loads in bf16, i.e. on a GPU)")
    t.add_argument("--keep-checkpoints", action="store_true")

    m = sub.add_parser("compare", help="held-out rows with the base and with the adapter")
    m.add_argument("--db", type=Path, required=True, metavar="DB",
                   help="the database the adapter was tuned on; the runs are stored there")
    m.add_argument("--adapter", type=Path, required=True, metavar="DIR")
    _model_arguments(m)
    m.add_argument("--reference", type=Path, metavar="DATA",
                   help="a labelled set for the regression check, e.g. xstest_prompts.csv")
    m.add_argument("--reference-format", default=None, help="how to read DATA (see guard.eval)")
    m.add_argument("--threshold", type=float, default=0.5)
    m.add_argument("--batch-size", type=int, default=16)
    m.add_argument("--report", type=Path, metavar="REPORT.json")
    from guard.tune.cli_prompt_guard import add_parser as add_prompt_guard

    add_prompt_guard(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(lambda: _run(args), refused=(LabelsError,), database=args.db,
                       resume="the last checkpoint is kept; run the same command to resume.")


def _run(args: argparse.Namespace) -> int:
    if args.command == "check":
        return _check(args)
    check_or_exit(("torch", "transformers"))
    from guard.cli import _quiet_transformers

    _quiet_transformers()
    if args.command == "prompt-guard":
        from guard.tune.cli_prompt_guard import run as run_prompt_guard

        return run_prompt_guard(args)
    return _train(args) if args.command == "train" else _compare(args)


def _family(args: argparse.Namespace) -> str:
    if args.family:
        return args.family
    return Family.LLAMA_GUARD_4.value if args.tiny else guess_family(str(args.model)).value


def _read_data(args: argparse.Namespace, family: str) -> TuneData:
    if args.db is not None:
        if not args.db.is_file():
            raise TuneError(f"No database at {args.db}.")
        with Store(args.db) as store:
            return from_store(store, family, args.labels)
    if args.labels != FINAL:
        raise TuneError("--labels goes with --db: an export file holds the labels it was "
                        "exported with (python -m labels export --labels ...).")
    return from_export(args.export, family)


def _summary(data: TuneData) -> str:
    counts = data.counts
    skipped = "".join(f"; {n} {why}" for why, n in sorted(data.skipped.items()))
    rerendered = (f"; {data.rerendered} rendered again (the stored prompt is from an older "
                  "renderer)" if data.rerendered else "")
    return (f"{data.path}: {len(data.examples)} usable examples ({counts['safe']} safe, "
            f"{counts['unsafe']} unsafe){skipped}{rerendered}")


def _check(args: argparse.Namespace) -> int:
    data = _read_data(args, _family(args))
    print(_summary(data))
    check_usable(data, min_examples=args.min_examples, min_per_class=args.min_per_class)
    print("enough to tune")
    return 0


def _load(args: argparse.Namespace):
    from guard.engines.llama_guard import LlamaGuard

    if args.tiny:
        from guard.engines.loading import default_tiny_dir
        from guard.testing.tiny import build_tiny_models

        return LlamaGuard.load(build_tiny_models(default_tiny_dir())[0], device="cpu",
                               quantize=args.quantize)
    return LlamaGuard.load(args.model, device=args.device, family=args.family,
                           revision=args.revision, quantize=args.quantize)


def _train(args: argparse.Namespace) -> int:
    from guard.tune.train import TuneSettings, tune

    settings = TuneSettings(
        seed=args.seed, eval_fraction=args.eval_fraction, learning_rate=args.lr,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        gradient_accumulation=args.grad_accum, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=tuple(m.strip() for m in args.target_modules.split(",") if m.strip()),
        save_steps=args.save_steps, gradient_checkpointing=args.gradient_checkpointing,
        bf16=args.bf16)
    settings.check()
    family = _family(args)
    data = _read_data(args, family)  # refuse too few labels before loading a model
    print(_summary(data), file=sys.stderr)
    check_usable(data, min_examples=args.min_examples, min_per_class=args.min_per_class)
    guard = _load(args)
    if guard.family.value != family:  # a Llama 4 checkpoint in a folder not named like one
        data = _read_data(args, guard.family.value)

    def progress(step: int, total: int, loss: float) -> None:
        print(f"step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

    result = tune(guard, data, args.out, settings, name=args.name, progress=progress,
                  keep_checkpoints=args.keep_checkpoints, min_examples=args.min_examples,
                  min_per_class=args.min_per_class)
    metrics = result.metadata["metrics"]
    if result.resumed_from_step:
        print(f"resumed from step {result.resumed_from_step}", file=sys.stderr)
    print(f"adapter {result.metadata['name']}@{result.metadata['adapter_sha256'][:8]} in "
          f"{result.adapter_dir}: {metrics['steps']} steps, held-out loss "
          f"{metrics['eval_loss_before']:.4f} -> {metrics['eval_loss_after']:.4f}, "
          f"{metrics['seconds_per_step']:.3f} s/step")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from guard.core.datasets import read_dataset
    from guard.tune.compare import compare_adapter, format_before_after

    if not args.db.is_file():
        raise TuneError(f"No database at {args.db}.")
    reference = None
    if args.reference is not None:
        if not args.reference_format:
            raise TuneError("Say how to read the reference set: --reference-format xstest|"
                            "openai-moderation|jsonl|csv.")
        reference = read_dataset(args.reference, args.reference_format)
    guard = _load(args)
    with Store(args.db) as store:
        result = compare_adapter(guard, args.adapter, store, reference=reference,
                                 threshold=args.threshold, batch_size=args.batch_size)
    print(format_before_after(result))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0
