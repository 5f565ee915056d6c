"""Serve a tuned Prompt Guard: a folder from `python -m guard.tune prompt-guard`, checked
against the base it was tuned on.

A tuned folder holds either the whole fine-tuned model (method "full": config.json,
model.safetensors, the tokenizer) or a LoRA adapter of it (method "lora": PEFT's
adapter_config.json and adapter_model.safetensors, the tokenizer), and guard_lab_prompt_guard.json,
written last, which records the base (its name and a fingerprint of its config and weights),
the data, the settings and the before/after. A LoRA folder is loaded onto its base, which must
have exactly the recorded weights; a full folder needs no base, but when a base is named it must
be the recorded one. The tuned model's name carries the folder's name and a hash of its weights,
so every score and every example saved against it is told apart from the base's.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.core.errors import AdapterMismatch, ModelLoadError

METADATA = "guard_lab_prompt_guard.json"
FORMAT = "guard-lab-prompt-guard/1"
FULL, LORA = "full", "lora"
METHODS = (FULL, LORA)
WEIGHTS = {FULL: "model.safetensors", LORA: "adapter_model.safetensors"}
# The config fields the weights depend on: two bases that differ here cannot share an adapter.
CONFIG_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "vocab_size", "max_position_embeddings", "num_labels",
                 "position_buckets", "relative_attention", "pos_att_type", "share_att_key",
                 "type_vocab_size")


@dataclass(frozen=True)
class TunedInfo:
    """A tuned Prompt Guard folder as recorded in it."""

    path: str
    name: str  # the folder's name, unless the run was given another
    method: str  # FULL or LORA
    sha256: str  # of the weights file
    base: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.sha256[:8]}"

    @property
    def base_label(self) -> str:
        model, revision = self.base.get("model", "?"), self.base.get("revision")
        return f"{model}@{revision}" if revision else str(model)


def is_tuned_folder(source: str | Path) -> bool:
    """Whether `source` is a folder made by `python -m guard.tune prompt-guard` (finished)."""
    return (Path(source) / METADATA).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_record(model: Any, tokenizer: Any) -> dict[str, Any]:
    config = model.config
    record = {f: getattr(config, f, None) for f in CONFIG_FIELDS}
    if isinstance(record["pos_att_type"], (list, tuple)):
        record["pos_att_type"] = list(record["pos_att_type"])
    record["tokenizer_size"] = len(tokenizer)
    return record


def weights_sha256(model: Any) -> str:
    """SHA-256 of every parameter (name, shape, float32 bytes) in name order: the same weights
    give the same hash on any device, whatever file they were read from."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.named_parameters(), key=lambda item: item[0]):
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def base_record(prompt_guard: Any) -> dict[str, Any]:
    """What a tuned folder records about the model it was tuned from."""
    config = config_record(prompt_guard.model, prompt_guard.tokenizer)
    return {"model": prompt_guard.name, "revision": prompt_guard.revision, "config": config,
            "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()
                                            ).hexdigest(),
            "weights_sha256": weights_sha256(prompt_guard.model)}


def base_differences(recorded: dict[str, Any], prompt_guard: Any) -> list[str]:
    """How a loaded Prompt Guard differs from the recorded base; [] when it is that model."""
    loaded = config_record(prompt_guard.model, prompt_guard.tokenizer)
    found = [f"{key} {loaded.get(key)} (tuned folder's base: {value})"
             for key, value in recorded.get("config", {}).items() if loaded.get(key) != value]
    if not found and weights_sha256(prompt_guard.model) != recorded.get("weights_sha256"):
        found.append("same shape but other weights (their SHA-256 differs)")
    return found


def read_tuned(folder: str | Path) -> TunedInfo:
    """The record of a finished tuned folder, its weights checked against it."""
    folder = Path(folder)
    meta_path = folder / METADATA
    if not meta_path.is_file():
        raise ModelLoadError(
            f"{folder} holds no {METADATA}: it is not a finished tuned Prompt Guard. Tune one "
            "with python -m guard.tune prompt-guard, or finish that run by repeating its command.")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        method, base, sha256 = metadata["method"], metadata["base"], metadata["weights_sha256"]
        name = metadata["name"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{meta_path} is damaged ({exc}); tune the model again.") from None
    if metadata.get("format") != FORMAT:
        raise ModelLoadError(f"{meta_path} is format {metadata.get('format')!r}; this Guard Lab "
                             f"reads {FORMAT}.")
    if method not in METHODS:
        raise ModelLoadError(f"{meta_path}: unknown method {method!r} (one of {METHODS}).")
    weights = folder / WEIGHTS[method]
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has no {WEIGHTS[method]}; copy the whole tuned folder.")
    if file_sha256(weights) != sha256:
        raise ModelLoadError(
            f"{weights} does not match the hash recorded in {METADATA}: the weights were changed "
            "or damaged. Copy the tuned folder again.")
    return TunedInfo(str(folder), str(name), method, str(sha256), dict(base), metadata)


def tuned_name(info: TunedInfo) -> str:
    return f"{info.base.get('model', '?')} + tuned {info.label}"


def _refuse(info: TunedInfo, given: Any, differences: list[str]) -> AdapterMismatch:
    how = ("a LoRA adapter needs the exact weights it was tuned on" if info.method == LORA
           else "its record names another base")
    return AdapterMismatch(
        f"The tuned Prompt Guard {info.label} ({info.method}) was tuned on {info.base_label}, "
        f"and the base given, {given.name}, is not that model ({how}): {'; '.join(differences)}. "
        f"Give --prompt-guard-base {info.base_label} (or leave --prompt-guard-base out).")


def load_tuned(folder: str | Path, *, base: Any | None = None, device: str | None = None) -> Any:
    """A `PromptGuard` with the tuned weights of `folder`.

    `base` (a loaded `PromptGuard`, a model id or folder, or None) is the model the folder was
    tuned on: a LoRA folder is loaded onto it (None: the recorded base's name); a full folder
    needs none, but one given must be the recorded base. A base of another shape or weights is
    refused with `AdapterMismatch`. A loaded base is copied, never changed.
    """
    from guard.engines.prompt_guard import PromptGuard

    info = read_tuned(folder)
    if base is not None and not isinstance(base, PromptGuard):
        base = PromptGuard.load(str(base), device=device)
    if info.method == LORA and base is None:
        base = PromptGuard.load(str(info.base["model"]), device=device,
                                revision=info.base.get("revision"))
    if base is not None:
        differences = base_differences(info.base, base)
        if differences:
            raise _refuse(info, base, differences)
    if info.method == FULL:
        loaded = PromptGuard.load(info.path, device=device or (
            str(base.model.device) if base is not None else None), plain=True)
        model, tokenizer = loaded.model, loaded.tokenizer
    else:
        model, tokenizer = _with_adapter(base, info)
    tuned = PromptGuard(model, tokenizer, name=tuned_name(info),
                        revision=info.base.get("revision"))
    tuned.tuned = info
    return tuned


def _with_adapter(base: Any, info: TunedInfo) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    try:
        model = PeftModel.from_pretrained(copy.deepcopy(base.model), info.path,
                                          is_trainable=False)
        model = model.merge_and_unload()  # plain DeBERTa again: scoring runs at the base's speed
        tokenizer = AutoTokenizer.from_pretrained(info.path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not load the tuned Prompt Guard in {info.path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    model.eval()
    return model, tokenizer
