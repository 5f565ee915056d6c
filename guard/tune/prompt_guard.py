"""Tune Prompt Guard 2 on the team's labels with transformers' Trainer: full fine-tuning or LoRA.

The output folder holds, while a run goes on: run.json (settings, base, data), split.json (the
held-out ids), progress.jsonl (one line a logged step) and checkpoints/ (Trainer checkpoints,
each with optimizer, scheduler and RNG state). The same call again, with the same settings, base
and data, resumes from the newest complete checkpoint (a SIGKILL loses at most `save_steps`
steps). At the end it writes the model (full: config, weights and tokenizer; LoRA: PEFT's adapter
files and the tokenizer), before_after.json, and guard_lab_prompt_guard.json, last; the
checkpoints are then removed. The same call on a finished folder scores its held-out messages
again with the base and the tuned model (a later compare).

Each message trains as Prompt Guard reads it: the chosen preprocessing, then its first window
(512 tokens with [CLS] and [SEP]); longer messages are counted in the record. Scoring still
takes every window and their maximum.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

from guard.core.errors import GuardError
from guard.core.prompt_guard_text import check_preprocessing, collapse_spacing
from guard.engines.prompt_guard import PromptGuard
from guard.engines.tuned_prompt_guard import (
    FORMAT,
    FULL,
    LORA,
    METADATA,
    METHODS,
    WEIGHTS,
    base_differences,
    base_record,
    file_sha256,
    load_tuned,
    read_tuned,
)
from guard.tune.data import Split
from guard.tune.errors import TuneError
from guard.tune.prompt_guard_compare import BeforeAfter, before_after
from guard.tune.prompt_guard_data import (
    PGData,
    PGExample,
    check_usable,
    data_sha256,
    pick,
    split,
)
from guard.tune.train import (
    CHECKPOINTS,
    PROGRESS,
    RUN,
    SPLIT,
    TuneProgress,
    _Progress,
    _read_json,
    _write_json,
    last_checkpoint,
)

BEFORE_AFTER = "before_after.json"
# Learning rates by method when none is given: full fine-tuning of DeBERTa-v3 as its paper and
# the GLUE recipes do (1e-5 to 3e-5); LoRA an order of magnitude higher, as PEFT's examples.
DEFAULT_LR = {FULL: 2e-5, LORA: 2e-4}


@dataclass(frozen=True)
class PGSettings:
    """Everything that decides the tuned model."""

    method: str = FULL
    seed: int = 0
    eval_fraction: float = 0.2
    learning_rate: float | None = None  # None: DEFAULT_LR of the method
    epochs: float = 3.0
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 16
    gradient_accumulation: int = 1
    weight_decay: float = 0.01
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query_proj", "key_proj", "value_proj")
    save_steps: int = 50
    preprocessing: str = "none"  # as guard.core.prompt_guard_text.PREPROCESSING
    threshold: float = 0.5  # of the before/after

    def resolved(self) -> PGSettings:
        lr = self.learning_rate if self.learning_rate is not None else DEFAULT_LR.get(self.method)
        return replace(self, learning_rate=lr)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self.resolved())
        data["target_modules"] = list(self.target_modules)
        if self.method == FULL:  # not used: keep them out of the record and the resume check
            for key in ("lora_r", "lora_alpha", "lora_dropout", "target_modules"):
                data.pop(key)
        return data

    def check(self) -> None:
        if self.method not in METHODS:
            raise TuneError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        for name in ("epochs", "batch_size", "gradient_accumulation", "save_steps"):
            if not getattr(self, name) > 0:
                raise TuneError(f"{name} must be more than 0, got {getattr(self, name)}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TuneError(f"learning_rate must be more than 0, got {self.learning_rate}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise TuneError(f"max_steps must be 1 or more, got {self.max_steps}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise TuneError(f"threshold must be between 0 and 1, got {self.threshold}.")
        if self.method == LORA:
            if not (self.lora_r > 0 and self.lora_alpha > 0 and 0 <= self.lora_dropout < 1):
                raise TuneError("LoRA needs lora_r > 0, lora_alpha > 0, 0 <= lora_dropout < 1.")
            if not self.target_modules:
                raise TuneError("Name at least one module to adapt (target_modules).")
        check_preprocessing(self.preprocessing)


@dataclass(frozen=True)
class PGResult:
    folder: Path
    metadata: dict[str, Any]
    before_after: BeforeAfter
    resumed_from_step: int | None  # the checkpoint this call went on from; None from scratch
    already_finished: bool  # the folder was finished: this call only compared again
    dropped: tuple[str, ...] = ()  # held-out ids no longer labelled (a later compare)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    return {name: package_metadata.version(name) for name in ("torch", "transformers", "peft")}


def _check_base(recorded: dict[str, Any], base: PromptGuard, out: Path) -> None:
    differences = base_differences(recorded, base)
    if differences:
        raise TuneError(f"{out} holds a run on {recorded.get('model')}, and the loaded base "
                        f"{base.name} differs: {'; '.join(differences)}. Load that base "
                        "(--base) to resume or compare it, or tune into a new output folder.")


def _start_or_resume(base: PromptGuard, data: PGData, out: Path, settings: PGSettings,
                     name: str) -> tuple[dict[str, Any], Split]:
    stored = _read_json(out / RUN)
    if stored is None and last_checkpoint(out / CHECKPOINTS) is not None:
        raise TuneError(f"{out} holds checkpoints but no {RUN}: they are not a Guard Lab run. "
                        "Tune into a new output folder.")
    if stored is None:
        held = split(data, seed=settings.seed, eval_fraction=settings.eval_fraction)
        run = {"name": name, "created_at": _now(), "settings": settings.to_json(),
               "base": base_record(base),
               "data": {**data.record(),
                        "train_sha256": data_sha256(pick(data, held.train_ids)),
                        "eval_sha256": data_sha256(pick(data, held.eval_ids))}}
        _write_json(out / SPLIT, held.to_json())
        _write_json(out / RUN, run)
        return run, held
    if stored.get("kind") not in (None, "prompt-guard") or "method" not in stored["settings"]:
        raise TuneError(f"{out} holds a Llama Guard tuning run; tune into a new output folder.")
    changed = [f"{key} {value} (stored: {stored['settings'].get(key)})"
               for key, value in settings.to_json().items() if stored["settings"].get(key) != value]
    if changed:
        raise TuneError(f"{out} holds a run with other settings: {'; '.join(changed)}. Repeat the "
                        "stored settings to resume it, or tune into a new output folder.")
    _check_base(stored["base"], base, out)
    held = Split.from_json(_read_json(out / SPLIT) or {})
    for part, ids in (("train", held.train_ids), ("eval", held.eval_ids)):
        if data_sha256(pick(data, ids)) != stored["data"][f"{part}_sha256"]:
            raise TuneError(
                f"The labels of the {part} messages changed since the run in {out} began; a "
                "resumed run must learn from the same data. Tune into a new output folder.")
    return stored, held


def encode(base: PromptGuard, examples: tuple[PGExample, ...], preprocessing: str
            ) -> tuple[list[dict[str, Any]], int]:
    """input_ids and label per message (its first window), and how many had more windows."""
    texts = [collapse_spacing(e.text, base.tokenizer) if preprocessing == "llamafirewall"
             else e.text for e in examples]
    full = base.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    cut = base.tokenizer(texts, truncation=True, max_length=base.window)["input_ids"]
    items = [{"input_ids": ids, "labels": int(e.malicious)}
             for ids, e in zip(cut, examples, strict=True)]
    return items, sum(len(a) > len(b) for a, b in zip(full, cut, strict=True))


def training_arguments(settings: PGSettings, output_dir: Path, *, use_cpu: bool) -> Any:
    """The Trainer's arguments for `settings` (the benchmark times the same ones)."""
    from transformers import TrainingArguments

    settings = settings.resolved()
    return TrainingArguments(
        output_dir=str(output_dir), seed=settings.seed, data_seed=settings.seed,
        learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        weight_decay=settings.weight_decay, save_strategy="steps", save_steps=settings.save_steps,
        save_total_limit=2, eval_strategy="no", logging_strategy="steps", logging_steps=1,
        report_to="none", disable_tqdm=True, use_cpu=use_cpu, remove_unused_columns=False,
        label_names=["labels"], dataloader_pin_memory=False)


def trainable(base: PromptGuard, settings: PGSettings) -> Any:
    """A copy of the base's model to train: itself (full) or wrapped with LoRA layers."""
    model = copy.deepcopy(base.model)  # the base keeps judging "before"
    if settings.method == FULL:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout,
                      target_modules=list(settings.target_modules),
                      modules_to_save=["classifier", "pooler"])
    return get_peft_model(model, lora)


def tune_prompt_guard(base: PromptGuard, data: PGData, out_dir: str | Path,
                      settings: PGSettings = PGSettings(), *, name: str | None = None,
                      progress: TuneProgress | None = None, keep_checkpoints: bool = False,
                      min_examples: int | None = None, min_per_class: int | None = None
                      ) -> PGResult:
    """Tune `base` on `data` into `out_dir`, resume a run left there, or compare a finished one.

    `base` is borrowed and never changed: training works on a copy of its weights.
    """
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, set_seed

    settings.check()
    settings = settings.resolved()
    if base.tuned is not None:
        raise TuneError(f"{base.name} is a tuned Prompt Guard; tune its base "
                        f"({base.tuned.base_label}) instead.")
    out = Path(out_dir)
    if (out / METADATA).exists():
        return _compare_again(base, data, out, settings)
    limits = {k: v for k, v in (("min_examples", min_examples), ("min_per_class", min_per_class))
              if v is not None}
    check_usable(data, **limits)
    out.mkdir(parents=True, exist_ok=True)
    name = name or out.resolve().name
    run, held = _start_or_resume(base, data, out, settings, name)
    train_examples, eval_examples = pick(data, held.train_ids), pick(data, held.eval_ids)
    train_set, truncated = encode(base, train_examples, settings.preprocessing)

    resume = last_checkpoint(out / CHECKPOINTS)
    args = training_arguments(settings, out / CHECKPOINTS, use_cpu=base.model.device.type == "cpu")
    set_seed(settings.seed)  # LoRA's initial weights: the same adapter for the same seed
    model = trainable(base, settings)
    tracker = _Progress(out / PROGRESS, progress)
    started = time.perf_counter()
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      data_collator=DataCollatorWithPadding(base.tokenizer),
                      callbacks=[tracker.callback])
    trainer.remove_callback(PrinterCallback)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = float(output.metrics.get("train_runtime", time.perf_counter() - started))
    model.save_pretrained(str(out))
    base.tokenizer.save_pretrained(str(out))
    del trainer, model
    weights = file_sha256(out / WEIGHTS[settings.method])
    epochs_now = float(output.metrics.get("epoch") or 0.0) - _resumed_epoch(resume)
    metadata = {
        "format": FORMAT, "kind": "prompt-guard", "name": name, "method": settings.method,
        "created_at": run["created_at"], "finished_at": _now(), "weights_sha256": weights,
        "base": run["base"],
        "data": {**run["data"], "train_ids": list(held.train_ids),
                 "eval_ids": list(held.eval_ids), "seed": held.seed,
                 "eval_fraction": held.eval_fraction, "train_examples": len(train_examples),
                 "eval_examples": len(eval_examples), "truncated_to_one_window": truncated},
        "settings": settings.to_json(),
        "metrics": {"steps": output.global_step, "epochs": output.metrics.get("epoch"),
                    "train_loss": output.training_loss,
                    "resumed_from_step": tracker.first_step or None,
                    "train_seconds_this_session": round(train_seconds, 3),
                    "seconds_per_epoch": round(train_seconds / epochs_now, 3)
                    if epochs_now > 0 else None},
        "versions": _versions(),
    }
    # The tuned model as it is served: through the loader, so this checks the folder too.
    _write_json(out / METADATA, metadata)
    try:
        tuned = load_tuned(out, base=base)
    except GuardError:
        (out / METADATA).unlink()  # not finished: the same command redoes the end
        raise
    result = before_after(base, tuned, eval_examples, threshold=settings.threshold,
                          preprocessing=settings.preprocessing)
    _write_json(out / BEFORE_AFTER, {"at": _now(), "tuned_model": tuned.name,
                                     **result.to_json()})
    metadata["before_after"] = {k: v for k, v in result.to_json().items() if k != "rows"}
    _write_json(out / METADATA, metadata)
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return PGResult(out, metadata, result, tracker.first_step or None, False)


def _resumed_epoch(checkpoint: Path | None) -> float:
    if checkpoint is None:
        return 0.0
    state = _read_json(checkpoint / "trainer_state.json") or {}
    return float(state.get("epoch") or 0.0)


def _compare_again(base: PromptGuard, data: PGData, out: Path, settings: PGSettings
                   ) -> PGResult:
    """A finished folder: its stored held-out messages, with today's labels, scored again."""
    info = read_tuned(out)
    _check_base(info.base, base, out)
    stored = info.metadata["settings"]
    found = data.by_id()
    eval_ids = [str(i) for i in info.metadata["data"]["eval_ids"]]
    held = tuple(found[i] for i in eval_ids if i in found)
    dropped = tuple(i for i in eval_ids if i not in found)
    if not held:
        raise TuneError(f"None of the {len(eval_ids)} held-out messages of {out} is labelled in "
                        f"{data.path}. Compare against the data it was tuned on.")
    tuned = load_tuned(out, base=base)
    result = before_after(base, tuned, held, threshold=settings.threshold,
                          preprocessing=stored.get("preprocessing", "none"))
    _write_json(out / BEFORE_AFTER, {"at": _now(), "tuned_model": tuned.name,
                                     "dropped": list(dropped), **result.to_json()})
    return PGResult(out, info.metadata, result, None, True, dropped)
