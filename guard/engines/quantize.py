"""Loading Llama Guard quantized, through transformers' own quantization configs.

    int8  torchao int8 weight-only (per-row scales); runs on CUDA and on a CPU
    fp8   torchao fp8 weights and activations (per-row); GPUs with compute capability 8.9 or newer
    nf4   bitsandbytes 4-bit NormalFloat with double quantization; CUDA only, bitsandbytes needed

Only the decoder's linear layers are quantized: the vision tower, its projector and the answer
head (whose `safe` and `unsafe` rows give p_unsafe) stay in the model's dtype, and so do the
embeddings (transformers leaves them alone unless asked). `refusal()` says, before any weight
is read, why this machine cannot run an option and what to use instead.

Importing this module does not import torch.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from guard.core.errors import ModelLoadError

QUANTIZE = ("none", "int8", "fp8", "nf4")
# Module names left unquantized. transformers matches them against parameter names from the
# start ("vision_model" covers "vision_model.model.layers.0...") or as a whole suffix, so the
# Llama 4 head is named in full ("language_model.lm_head.weight" does not end in "lm_head").
KEEP_UNQUANTIZED = ("vision_model", "multi_modal_projector", "language_model.lm_head", "lm_head")
FP8_CAPABILITY = (8, 9)  # Ada (L4, L40S, RTX 4090) and Hopper (H100) have fp8 tensor cores


class QuantizeRefused(ModelLoadError):
    """The machine cannot run the quantization asked for; the message says what to use."""


class _TorchaoEnumNotice(logging.Filter):
    """Drops torch's notice that an Enum needs no pytree registration, logged on stderr when
    torchao 0.18.0 is imported on torch 2.14 (transformers imports it with its model code
    whenever it is installed): it would break every command's one-line error. Nothing else of
    that logger is touched."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass and is now natively supported" not in record.getMessage()


logging.getLogger("torch.utils._pytree").addFilter(_TorchaoEnumNotice())


def model_name(name: str, quantize: str) -> str:
    """The loaded model's name: `<name> (int8)` when quantized, so results never pass for bf16."""
    return name if quantize == "none" else f"{name} ({quantize})"


def refusal(quantize: str, device: Any) -> str | None:
    """Why `quantize` cannot run on `device` (a torch.device) here, with what to use instead;
    None when it can."""
    if quantize not in QUANTIZE:
        return f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}"
    if quantize == "none":
        return None
    if quantize in ("int8", "fp8") and importlib.util.find_spec("torchao") is None:
        return (f"--quantize {quantize} needs torchao, which is in Guard Lab's lock: install it "
                "with pip install --no-deps -r requirements.txt")
    on_cuda = getattr(device, "type", str(device)) == "cuda"
    if quantize == "nf4":
        if importlib.util.find_spec("bitsandbytes") is None:
            return ("--quantize nf4 needs bitsandbytes and a CUDA GPU; bitsandbytes is not in "
                    "Guard Lab's lock (pip install bitsandbytes to try it), and --quantize int8 "
                    "(torchao, in the lock) also fits Llama Guard 4 on a 24 GB card")
        if not on_cuda:
            return ("--quantize nf4 (bitsandbytes) runs on a CUDA GPU only; on this machine use "
                    "--quantize int8, or --engine llama-cpp with a Llama Guard 3 1B GGUF")
    if quantize == "fp8":
        if not on_cuda:
            return ("--quantize fp8 needs a GPU with fp8 (compute capability 8.9 or newer: L4, "
                    "L40S, RTX 4090, H100); on this machine use --quantize int8")
        import torch

        capability = torch.cuda.get_device_capability(device)
        if tuple(capability) < FP8_CAPABILITY:
            return (f"--quantize fp8 needs a GPU with fp8 (compute capability 8.9 or newer); "
                    f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}. "
                    "Use --quantize int8 (or nf4 with bitsandbytes) instead")
    return None


def check(quantize: str, device: Any) -> None:
    """Raise QuantizeRefused when `quantize` cannot run on `device` here."""
    why = refusal(quantize, device)
    if why is not None:
        raise QuantizeRefused(why + ".")


def quantization_config(quantize: str, compute_dtype: Any) -> Any:
    """transformers' config for `quantize` (None for "none"); `check` it first."""
    if quantize == "none":
        return None
    if quantize == "nf4":
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype,
                                  llm_int8_skip_modules=list(KEEP_UNQUANTIZED))
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )
    from transformers import TorchAoConfig

    kind = (Int8WeightOnlyConfig() if quantize == "int8"
            else Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return TorchAoConfig(quant_type=kind, modules_to_not_convert=list(KEEP_UNQUANTIZED))
