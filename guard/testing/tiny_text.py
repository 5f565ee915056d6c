"""A tiny Llama Guard 3 stand-in (`LlamaForCausalLM`), its GGUF builds, built offline in seconds.

It is what the llama.cpp and OpenAI-compatible engines are tested on: a real Llama-architecture
checkpoint with a locally trained byte-level BPE tokenizer holding the Llama 3 special tokens,
trained just long enough to answer the text-only `guard.testing.tiny.LLAMA_GUARD_EXAMPLES` correctly
under the Llama Guard 3 (8B), Llama Guard 3 1B and Llama Guard 2 prompt formats. Each answer
starts as that family's model starts it (`guard.core.prompts.ANSWER_PREFIX`): a blank line, or for
Llama Guard 2 a space, so its first answer token is ' safe' / ' unsafe' and the engines must
read the score from that spelling. It is saved with `save_pretrained` (so
`LlamaGuard.load(folder, family="llama-guard-3")` runs it on transformers) and written to GGUF
with the `gguf` package (so llama.cpp runs the very same weights). A build is reused only while
its content key (recipe and every training prompt and answer) is unchanged. Its verdicts mean
nothing beyond the trained examples.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.core.categories import Family, categories_for
from guard.core.prompts import ANSWER_PREFIX, render
from guard.testing._tiny_common import content_key, fit, provide, train_llama_tokenizer
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES, GuardExample

RECIPE_VERSION = "3"
TEXT_DIR = "llama-guard-3-tiny"
FAMILIES = (Family.LLAMA_GUARD_3, Family.LLAMA_GUARD_3_1B, Family.LLAMA_GUARD_2)
LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
MAX_STEPS = 800
LEARNING_RATE = 3e-3

# The examples without images: the only ones a text model can be asked.
TEXT_EXAMPLES: dict[str, GuardExample] = {
    name: e for name, e in LLAMA_GUARD_EXAMPLES.items()
    if not any(colours for _, _, colours in e.turns)
}


@dataclass(frozen=True)
class TinyTextModel:
    """Where the built stand-in lies: the transformers folder and its GGUF files."""

    hf_dir: Path
    gguf_f32: Path
    gguf_q8_0: Path


def to_family(codes: Iterable[str], family: Family | str) -> tuple[str, ...]:
    """Map Llama Guard 3/4 category codes to `family`'s own numbering, by category name."""
    by_name = {c.prompt_name: c.code for c in categories_for(family)}
    names = {c.code: c.prompt_name for c in categories_for(Family.LLAMA_GUARD_3)}
    return tuple(by_name[names[code]] for code in codes)


def expected(example: GuardExample, family: Family | str) -> tuple[tuple[str, ...], str]:
    """(excluded codes, trained answer) of `example` in `family`'s numbering."""
    label, *rest = example.answer.split("\n")
    codes = to_family(rest[0].split(",") if rest else (), family)
    return to_family(example.excluded, family), label + ("\n" + ",".join(codes) if codes else "")


def build_tiny_text_model(root: str | Path, *, use_shipped: bool = True) -> TinyTextModel:
    """The stand-in under `root`: reused, copied from the shipped build of the same recipe
    (guard/testing/prebuilt), or trained here (`use_shipped=False` always trains); safe when
    several processes ask at once."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / TEXT_DIR
    built = TinyTextModel(folder, folder / "gguf" / "model-f32.gguf",
                          folder / "gguf" / "model-q8_0.gguf")
    with open(root / ".build-text.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        provide(folder, text_model_key(), _build, what="tiny Llama Guard 3 and its GGUF files",
                use_shipped=use_shipped)
    return built


def text_model_key() -> str:
    """What the stand-in is made from: its recipe and every training prompt and answer."""
    return content_key(RECIPE_VERSION, MAX_STEPS, LEARNING_RATE, _samples())


def _build(out_dir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "model"
        _train_and_save(staging)
        (staging / "gguf").mkdir()
        write_gguf(staging, staging / "gguf" / "model-f32.gguf", "f32")
        write_gguf(staging, staging / "gguf" / "model-q8_0.gguf", "q8_0")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.move(str(staging), out_dir)


def _samples() -> list[tuple[str, str]]:
    """(prompt, answer) pairs: every text example in every trained family, each answer as the
    family's model writes it (with its leading blank line or space)."""
    pairs = []
    for family in FAMILIES:
        for example in TEXT_EXAMPLES.values():
            excluded, answer = expected(example, family)
            pairs.append((render(example.conversation(), excluded, family),
                          ANSWER_PREFIX[family.value] + answer))
    return pairs


def _train_and_save(out_dir: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    samples = _samples()
    tokenizer = _build_tokenizer([p for p, _ in samples] + [a for _, a in samples] * 20)
    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        bos_token_id=ids("<|begin_of_text|>"), eos_token_id=ids("<|eot_id|>"),
        pad_token_id=ids("<|finetune_right_pad_id|>"))
    model = LlamaForCausalLM(config)
    _train(model, tokenizer, samples)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id, do_sample=False,
        eos_token_id=[ids("<|end_of_text|>"), ids("<|eom_id|>"), ids("<|eot_id|>")])
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _build_tokenizer(corpus: list[str]) -> Any:
    return train_llama_tokenizer(corpus, LLAMA3_SPECIAL_TOKENS, bos="<|begin_of_text|>",
                                 eos="<|eot_id|>", pad="<|finetune_right_pad_id|>")


def _train(model: Any, tokenizer: Any, samples: list[tuple[str, str]]) -> int:
    import torch

    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    pad = tokenizer.convert_tokens_to_ids("<|finetune_right_pad_id|>")
    rows, targets = [], []
    for prompt, answer in samples:
        # Prompt and answer are tokenized apart, as they are at inference.
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eot]
        rows.append(p + a)
        targets.append([-100] * len(p) + a)
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
    return fit(model, {"input_ids": input_ids, "attention_mask": mask, "labels": labels},
               lr=LEARNING_RATE, max_steps=MAX_STEPS, check_every=10)


def write_gguf(hf_dir: str | Path, out_path: str | Path, qtype: str = "f32") -> Path:
    """Write a small Llama-architecture transformers folder as a llama.cpp GGUF file.

    Enough for the stand-in (no rope scaling, byte-level BPE with the Llama 3 pre-tokenizer);
    real checkpoints go through llama.cpp's own convert_hf_to_gguf.py. `qtype`: f32, f16, q8_0.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    hf_dir, out_path = Path(hf_dir), Path(out_path)
    config = json.loads((hf_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype]
    writer = gguf.GGUFWriter(str(out_path), "llama")
    writer.add_name("Guard Lab tiny Llama Guard 3 stand-in")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    writer.add_rope_dimension_count(config["head_dim"])
    writer.add_rope_freq_base(float(config["rope_theta"] if "rope_theta" in config
                                    else config["rope_parameters"]["rope_theta"]))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    _add_vocab(writer, tokenizer, config)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
                 "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(config["num_hidden_layers"]):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    tensors = load_file(hf_dir / "model.safetensors")
    for hf_name, data in tensors.items():
        data = data.astype(np.float32)
        # llama.cpp applies rotary embeddings to interleaved pairs; transformers to two halves.
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        name = names[hf_name]
        if data.ndim == 1 or qtype == "f32":
            writer.add_tensor(name, data)
        elif qtype == "f16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def _permute(weights: Any, n_head: int) -> Any:
    rows = weights.shape[0]
    return (weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_vocab(writer: Any, tokenizer: Any, config: dict[str, Any]) -> None:
    import gguf

    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    special = set(tokenizer.all_special_ids) | {
        tokenizer.convert_tokens_to_ids(t) for t in LLAMA3_SPECIAL_TOKENS}
    tokens, types = [], []
    for i in range(config["vocab_size"]):
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.CONTROL if i in special else
                     gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    ids = tokenizer.convert_tokens_to_ids
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids("<|begin_of_text|>"))
    writer.add_eos_token_id(ids("<|eot_id|>"))
    writer.add_eot_token_id(ids("<|eot_id|>"))
    writer.add_pad_token_id(ids("<|finetune_right_pad_id|>"))
    # As in the real Llama Guard 3 GGUF builds: servers prepend <|begin_of_text|> themselves.
    writer.add_add_bos_token(True)
