"""Tune a LoRA adapter on reviewers' labels with transformers' Trainer, resumable after a kill.

The output folder holds, while a run goes on: run.json (settings, base model, data hashes),
split.json (the held-out ids), progress.jsonl (one line a logged step) and checkpoints/
(Trainer checkpoints, each with optimizer, scheduler and RNG state). The same call again with
the same settings resumes from the newest complete checkpoint. At the end it writes the adapter
(PEFT's files) and guard_lab_adapter.json, last; the checkpoints are then removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from statistics import median
from typing import Any

import torch

from guard.core.categories import Family
from guard.engines.adapter import (
    FORMAT,
    METADATA,
    WEIGHTS,
    base_differences,
    base_record,
    carries_adapter,
    file_sha256,
)
from guard.engines.llama_guard import LlamaGuard
from guard.tune.data import Split, TuneData, check_usable, data_sha256, make_split, pick
from guard.tune.errors import TuneError
from guard.tune.features import Collator, encode_all

# progress(step, total_steps, loss): after every logged step (the CLI prints, the app shows a bar).
TuneProgress = Callable[[int, int, float], None]
RUN, SPLIT, PROGRESS, CHECKPOINTS = "run.json", "split.json", "progress.jsonl", "checkpoints"


@dataclass(frozen=True)
class TuneSettings:
    """Everything that decides the adapter. Defaults follow Meta's llama-recipes LoRA recipe,
    which its Llama Guard fine-tuning notebook uses: a low learning rate (1e-4), rank 8,
    alpha 32, dropout 0.05 on the attention's q and v projections; the Llama Guard 2 card asks
    for tuning on the team's own policy data, not for more capacity."""

    seed: int = 0
    eval_fraction: float = 0.2
    learning_rate: float = 1e-4
    epochs: float = 3.0
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 1
    gradient_accumulation: int = 4
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    save_steps: int = 50
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # None: when the model is loaded in bf16 (a GPU)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    def check(self) -> None:
        positive = ("learning_rate", "epochs", "batch_size", "gradient_accumulation", "lora_r",
                    "lora_alpha", "save_steps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise TuneError(f"{name} must be more than 0, got {getattr(self, name)}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise TuneError(f"max_steps must be 1 or more, got {self.max_steps}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise TuneError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if not self.target_modules:
            raise TuneError("Name at least one module to adapt (target_modules).")


@dataclass(frozen=True)
class TuneResult:
    adapter_dir: Path
    metadata: dict[str, Any]
    resumed_from_step: int | None  # the checkpoint this call went on from; None from scratch


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    """Write beside `path` and rename over it: a kill never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TuneError(f"{path} is damaged; tune into a new output folder.") from None


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint that was written to the end (a kill while saving leaves one
    without its trainer_state.json, which Trainer writes last)."""
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("checkpoint-*"):
        state = path / "trainer_state.json"
        try:
            step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
        except (OSError, ValueError, KeyError):
            continue
        found.append((int(step), path))
    return max(found)[1] if found else None


def lora_targets(guard: LlamaGuard, names: tuple[str, ...]) -> str | list[str]:
    """Only the language model's layers: Llama Guard 4's vision tower has q/v projections too."""
    if guard.family is Family.LLAMA_GUARD_4:
        return rf".*language_model.*\.({'|'.join(names)})$"
    return list(names)


def _versions() -> dict[str, str]:
    return {name: package_metadata.version(name) for name in ("torch", "transformers", "peft")}


def _start_or_resume(guard: LlamaGuard, data: TuneData, out: Path, settings: TuneSettings,
                     name: str) -> tuple[dict[str, Any], Split]:
    """Write run.json and split.json, or check that a stored run has the same settings, base
    and data."""
    base = base_record(guard)
    stored = _read_json(out / RUN)
    if stored is None and last_checkpoint(out / CHECKPOINTS) is not None:
        raise TuneError(f"{out} holds checkpoints but no {RUN}: they are not a Guard Lab run. "
                        "Tune into a new output folder.")
    if stored is None:
        split = make_split(data.examples, seed=settings.seed, eval_fraction=settings.eval_fraction)
        run = {"name": name, "created_at": _now(), "settings": settings.to_json(), "base": base,
               "data": {"source": data.source, "path": data.path, "family": data.family,
                        "skipped": data.skipped, "rerendered": data.rerendered,
                        "train_sha256": data_sha256(pick(data, split.train_ids)),
                        "eval_sha256": data_sha256(pick(data, split.eval_ids))}}
        _write_json(out / SPLIT, split.to_json())
        _write_json(out / RUN, run)
        return run, split
    changed = [f"{key} {value} (stored: {stored['settings'].get(key)})"
               for key, value in settings.to_json().items() if stored["settings"].get(key) != value]
    if changed:
        raise TuneError(f"{out} holds a run with other settings: {'; '.join(changed)}. Repeat the "
                        "stored settings to resume it, or tune into a new output folder.")
    differences = base_differences(stored["base"], guard)
    if differences:
        raise TuneError(f"{out} holds a run on {stored['base']['model']}, and the loaded model "
                        f"differs: {'; '.join(differences)}. Load that model to resume it.")
    split_json = _read_json(out / SPLIT)
    if split_json is None:
        raise TuneError(f"{out} has {RUN} but no {SPLIT}; tune into a new output folder.")
    split = Split.from_json(split_json)
    for part, ids in (("train", split.train_ids), ("eval", split.eval_ids)):
        if data_sha256(pick(data, ids)) != stored["data"][f"{part}_sha256"]:
            raise TuneError(
                f"The labels of the {part} examples changed since the run in {out} began; a "
                "resumed run must learn from the same data. Tune into a new output folder.")
    return stored, split


class _Progress:
    """A Trainer callback: progress.jsonl, the hook, and the time of each optimizer step."""

    def __init__(self, path: Path, hook: TuneProgress | None) -> None:
        from transformers import TrainerCallback

        outer = self
        self.path, self.hook = path, hook
        self.step_seconds: list[float] = []
        self.first_step: int | None = None
        self._began = 0.0

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                outer.first_step = state.global_step

            def on_step_begin(self, args, state, control, **kwargs):
                outer._began = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                outer.step_seconds.append(time.perf_counter() - outer._began)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    outer.log(state.global_step, state.max_steps, float(logs["loss"]))

        self.callback = Callback()

    def log(self, step: int, total: int, loss: float) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "total_steps": total, "loss": loss,
                                     "at": _now()}) + "\n")
        if self.hook is not None:
            self.hook(step, total, loss)


def tune(guard: LlamaGuard, data: TuneData, out_dir: str | Path,
         settings: TuneSettings = TuneSettings(), *, name: str | None = None,
         progress: TuneProgress | None = None, keep_checkpoints: bool = False,
         min_examples: int | None = None, min_per_class: int | None = None) -> TuneResult:
    """Tune a LoRA adapter of `guard` on `data` into `out_dir`; resume a run left there.

    `guard` is borrowed: the adapter's layers are taken out again at the end, so it judges as
    the base afterwards. Load the result with `load_adapter`.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    settings.check()
    if carries_adapter(guard):
        raise TuneError(f"{guard.name} already carries an adapter; tune the base model.")
    out = Path(out_dir)
    if (out / METADATA).exists():
        raise TuneError(f"{out} already holds a finished adapter; tune into a new output folder.")
    limits = {k: v for k, v in (("min_examples", min_examples), ("min_per_class", min_per_class))
              if v is not None}
    check_usable(data, **limits)
    out.mkdir(parents=True, exist_ok=True)
    name = name or out.resolve().name
    run, split = _start_or_resume(guard, data, out, settings, name)
    train_examples, eval_examples = pick(data, split.train_ids), pick(data, split.eval_ids)
    train_set, eval_set = encode_all(guard, train_examples), encode_all(guard, eval_examples)

    checkpoints = out / CHECKPOINTS
    resume = last_checkpoint(checkpoints)
    bf16 = settings.bf16 if settings.bf16 is not None else guard.model.dtype == torch.bfloat16
    args = TrainingArguments(
        output_dir=str(checkpoints), seed=settings.seed, data_seed=settings.seed,
        learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1, per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        gradient_checkpointing=settings.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, bf16=bf16,
        save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2,
        eval_strategy="no", logging_strategy="steps", logging_steps=1, report_to="none",
        disable_tqdm=True, use_cpu=guard.model.device.type == "cpu", remove_unused_columns=False,
        label_names=["labels"], dataloader_pin_memory=False, weight_decay=0.0)
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, task_type="CAUSAL_LM",
                      target_modules=lora_targets(guard, settings.target_modules))
    set_seed(settings.seed)  # LoRA's initial weights: the same adapter for the same seed
    model = get_peft_model(guard.model, lora)
    tracker = _Progress(out / PROGRESS, progress)
    started = time.perf_counter()
    try:
        trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                          data_collator=Collator(guard.pad_id), callbacks=[tracker.callback])
        trainer.remove_callback(PrinterCallback)
        before = run.get("eval_loss_before")
        if before is None:
            before = trainer.evaluate()["eval_loss"]  # LoRA starts as the identity: the base
            run["eval_loss_before"] = before
            _write_json(out / RUN, run)
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        after = trainer.evaluate()["eval_loss"]
        model.save_pretrained(str(out))
        seconds = time.perf_counter() - started
        metadata = {
            "format": FORMAT, "name": name, "created_at": run["created_at"],
            "finished_at": _now(), "adapter_sha256": file_sha256(out / WEIGHTS),
            "base": run["base"],
            "data": {**run["data"], "examples": len(data.examples),
                     "train_ids": list(split.train_ids), "eval_ids": list(split.eval_ids),
                     "seed": split.seed, "eval_fraction": split.eval_fraction,
                     "sha256": data_sha256(train_examples + eval_examples)},
            "settings": settings.to_json(),
            "metrics": {"steps": trainer.state.global_step, "epochs": trainer.state.epoch,
                        "train_loss": output.training_loss, "eval_loss_before": before,
                        "eval_loss_after": after, "train_examples": len(train_examples),
                        "eval_examples": len(eval_examples),
                        "resumed_from_step": tracker.first_step or None,
                        "seconds_this_session": round(seconds, 3),
                        "seconds_per_step": round(median(tracker.step_seconds or [0.0]), 4)},
            "versions": _versions(),
        }
        _write_json(out / METADATA, metadata)
    finally:
        model.unload()  # the base model's own layers back in place, without the adapter
        guard.model.eval()
        if settings.gradient_checkpointing:
            guard.model.gradient_checkpointing_disable()
    if not keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return TuneResult(out, metadata, tracker.first_step or None)

