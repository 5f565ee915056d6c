"""Serve a tuned adapter: wrap a loaded Llama Guard with it, refusing one tuned on another base.

An adapter folder holds PEFT's files (adapter_config.json, adapter_model.safetensors) and
guard_lab_adapter.json, written last, which records the base model, the data, the settings and
the metrics. The tuned model's name carries the adapter and a hash of its weights, so every
verdict and every example saved against it is told apart from the base's.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.core.errors import AdapterMismatch, ModelLoadError
from guard.engines.llama_guard import LlamaGuard

METADATA = "guard_lab_adapter.json"
WEIGHTS = "adapter_model.safetensors"
FORMAT = "guard-lab-adapter/1"
# Base weights sampled to tell two models of the same shape apart: bf16 keeps about 3 digits,
# so a checkpoint loaded in bf16 on a GPU and in float32 on a CPU still matches.
SAMPLE_COLUMNS = 8
SAMPLE_REL_TOL = 2e-2
SAMPLE_ABS_TOL = 1e-3


@dataclass(frozen=True)
class AdapterInfo:
    """An adapter as recorded in its folder."""

    path: str
    name: str
    sha256: str  # of adapter_model.safetensors
    base: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.sha256[:8]}"


class AdaptedLlamaGuard(LlamaGuard):
    """Llama Guard with a LoRA adapter. `name` is "<base> + adapter <name>@<hash8>"."""

    def __init__(self, model: Any, base: LlamaGuard, *, name: str, adapter: AdapterInfo) -> None:
        super().__init__(model, base.processor, family=base.family, name=name,
                         revision=base.revision)
        # The base patched the checkpoint's chunk size and capped its context then; the patched
        # config no longer says so.
        self.context_limit = base.context_limit
        self.base_name = base.name
        self.adapter = adapter


def carries_adapter(guard: LlamaGuard) -> bool:
    """Whether PEFT layers are in the model (also after `load_adapter` took it over)."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(guard, AdaptedLlamaGuard) or isinstance(guard.model, PeftModel) or any(
        isinstance(m, BaseTunerLayer) for m in guard.model.modules())


def adapted_name(base_name: str, info: AdapterInfo) -> str:
    return f"{base_name} + adapter {info.label}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def architecture(guard: LlamaGuard) -> dict[str, Any]:
    """The shape of the loaded model and its tokenizer: what an adapter depends on."""
    config = guard.model.config
    text = getattr(config, "text_config", config)
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size")
    return {"model_type": config.model_type, "family": guard.family.value,
            **{f: getattr(text, f, None) for f in fields},
            "tokenizer_size": len(guard.tokenizer), "safe_id": guard.safe_id,
            "unsafe_id": guard.unsafe_id}


def weights_sample(guard: LlamaGuard) -> list[float]:
    """A few weights of the base (output and input embedding rows of 'safe' and 'unsafe',
    which LoRA leaves alone): two models of one shape differ here."""
    rows = [guard.safe_id, guard.unsafe_id]
    sample = []
    for layer in (guard.model.get_output_embeddings(), guard.model.get_input_embeddings()):
        values = layer.weight[rows, :SAMPLE_COLUMNS].detach().float().cpu()
        sample.extend(round(float(v), 6) for v in values.flatten())
    return sample


def base_record(guard: LlamaGuard) -> dict[str, Any]:
    """What an adapter folder records about the model it was tuned on."""
    return {"model": guard.name, "revision": guard.revision, "family": guard.family.value,
            "dtype": str(guard.model.dtype).removeprefix("torch."),
            "architecture": architecture(guard), "weights_sample": weights_sample(guard)}


def read_adapter(adapter_dir: str | Path) -> AdapterInfo:
    """The recorded metadata of a finished adapter folder, its weights checked against it."""
    folder = Path(adapter_dir)
    meta_path, weights = folder / METADATA, folder / WEIGHTS
    if not folder.is_dir():
        raise ModelLoadError(f"No adapter folder at {folder}.")
    if not meta_path.is_file():
        raise ModelLoadError(
            f"{folder} holds no {METADATA}: it is not a finished Guard Lab adapter. Tune one "
            "with python -m guard.tune train, or finish that run by repeating its command.")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        base, name, sha256 = metadata["base"], metadata["name"], metadata["adapter_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{meta_path} is damaged ({exc}); tune the adapter again.") from None
    if metadata.get("format") != FORMAT:
        raise ModelLoadError(f"{meta_path} is format {metadata.get('format')!r}; this Guard Lab "
                             f"reads {FORMAT}.")
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has no {WEIGHTS}; copy the whole adapter folder.")
    if file_sha256(weights) != sha256:
        raise ModelLoadError(
            f"{weights} does not match the hash recorded in {METADATA}: the weights were changed "
            "or damaged. Copy the adapter folder again.")
    return AdapterInfo(str(folder), str(name), str(sha256), dict(base), metadata)


def base_differences(recorded: dict[str, Any], guard: LlamaGuard) -> list[str]:
    """How the loaded model differs from the one an adapter was tuned on; [] when it matches."""
    differences = []
    loaded = architecture(guard)
    for key, value in recorded.get("architecture", {}).items():
        if loaded.get(key) != value:
            differences.append(f"{key} {loaded.get(key)} (adapter's base: {value})")
    if differences:
        return differences
    sample, mine = recorded.get("weights_sample") or [], weights_sample(guard)
    if len(sample) != len(mine) or not all(
            math.isclose(a, b, rel_tol=SAMPLE_REL_TOL, abs_tol=SAMPLE_ABS_TOL)
            for a, b in zip(sample, mine, strict=False)):
        differences.append("same shape but other weights (the sampled embedding rows differ)")
    return differences


def load_adapter(guard: LlamaGuard, adapter_dir: str | Path) -> AdaptedLlamaGuard:
    """Wrap `guard`'s model with the adapter in `adapter_dir` (PEFT), after checking its base.

    PEFT puts the adapter's layers into the base model in place, so from then on `guard`'s
    weights are the tuned ones too: its name is changed to the tuned name as well, and only
    the returned guard should be used. Load the base again to judge with the base.
    """
    from peft import PeftModel

    if carries_adapter(guard):
        raise ModelLoadError(f"{guard.name} already carries an adapter; load the base model "
                             "again to use another one.")
    info = read_adapter(adapter_dir)
    differences = base_differences(info.base, guard)
    if differences:
        base = info.base.get("model", "?")
        revision = info.base.get("revision")
        raise AdapterMismatch(
            f"The adapter {info.label} was tuned on {base}"
            f"{'@' + revision if revision else ''}, and the loaded model {guard.name} is not that "
            f"model: {'; '.join(differences)}. Load the base model it was tuned on.")
    try:
        model = PeftModel.from_pretrained(guard.model, info.path, is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not load the adapter in {info.path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    model.eval()
    name = adapted_name(guard.name, info)
    tuned = AdaptedLlamaGuard(model, guard, name=name, adapter=info)
    guard.name = name  # its modules now carry the adapter: never let it pass for the base
    return tuned
