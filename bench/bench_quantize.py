"""What `--quantize int8` costs in verdicts and time on the tiny Llama Guard 4, and what each
option takes in memory at Llama Guard 4's real shapes.

    python bench/bench_quantize.py               # the known examples and all of XSTest (~2 min)
    python bench/bench_quantize.py --limit 100   # the first 100 XSTest prompts

`lg4_int8_vs_bf16_p_unsafe: ratio=X` is the time of the int8 model over the unquantized one,
judging the same conversations in the same process (alternated, so load spreads over both); the
unquantized model is the engine's own choice of dtype on this device (float32 on a CPU, bf16 on
CUDA), and the line says which. Beside it: how many verdicts agree and the largest p_unsafe
difference, on the known examples and on the XSTest run.

The memory table is computed from the model's own layers, not measured: Llama Guard 4 is built
on the meta device from bench/full_size_configs.json (no weights, no memory) and each parameter
counted in the bytes the option stores it in (quantized: the decoder's linear layers; kept in
bf16: embeddings, norms, the answer head, the vision tower and its projector). The same counting
is checked against the storage of the tiny model really quantized to int8 on this machine. On a
GPU, `torch.cuda.max_memory_allocated` after a load is the measurement to compare it with.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from guard.core.datasets import conversation_for, read_dataset  # noqa: E402
from guard.engines.llama_guard import LlamaGuard  # noqa: E402
from guard.engines.loading import default_tiny_dir  # noqa: E402
from guard.eval.runner import DEFAULT_BATCH_SIZE  # noqa: E402
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES, build_tiny_models  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "full_size_configs.json"
XSTEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "xstest_prompts.csv"
GB = 1e9
# Bytes per quantized weight, scales included: int8 and fp8 keep one scale per output row
# (bf16 for torchao int8, float32 for fp8); nf4 packs two weights a byte, with an 8-bit absmax per
# 64 weights and a float32 scale per 256 of those (bitsandbytes' double quantization).
ROW_SCALE = {"int8": 2, "fp8": 4}
NF4_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
OPTIONS = ("none", "int8", "fp8", "nf4")
TEXT_TOKENS, IMAGES, NEW_TOKENS = 1000, 5, 40


# -- verdicts and time on the tiny models -------------------------------------------------------

def judge(guard: LlamaGuard, conversations: list, excluded: list) -> list:
    return guard.classify_batch(conversations, excluded_per_item=excluded,
                                batch_size=DEFAULT_BATCH_SIZE)


def compare(name: str, plain: LlamaGuard, int8: LlamaGuard, conversations: list,
            excluded: list, rounds: int) -> tuple[float, float]:
    """Both models over the same conversations, alternated; prints agreement and drift."""
    times = {id(plain): 0.0, id(int8): 0.0}
    verdicts = {}
    for r in range(rounds):
        for guard in ((plain, int8) if r % 2 == 0 else (int8, plain)):
            start = time.perf_counter()
            verdicts[id(guard)] = judge(guard, conversations, excluded)
            times[id(guard)] += time.perf_counter() - start
    ours, theirs = verdicts[id(int8)], verdicts[id(plain)]
    same = sum(a.verdict == b.verdict for a, b in zip(ours, theirs, strict=True))
    same_text = sum(a.raw_output == b.raw_output for a, b in zip(ours, theirs, strict=True))
    drift = max(abs(a.p_unsafe - b.p_unsafe) for a, b in zip(ours, theirs, strict=True))
    print(f"  {name}: verdicts agree {same}/{len(ours)} (same answer text {same_text}), "
          f"max |p_unsafe diff| {drift:.2e}; int8 {times[id(int8)] / rounds:.2f} s, "
          f"unquantized {times[id(plain)] / rounds:.2f} s per pass", flush=True)
    flips = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
             if a.verdict != b.verdict]
    for i, a, b in flips[:5]:  # a flip sits on the threshold: both p_unsafe say how close
        print(f"    item {i}: int8 says {a.verdict} at p_unsafe {a.p_unsafe:.3f}, unquantized "
              f"{b.verdict} at {b.p_unsafe:.3f} (threshold {a.threshold})", flush=True)
    return times[id(int8)], times[id(plain)]


def bench_tiny(limit: int | None, rounds: int) -> None:
    folder = build_tiny_models(default_tiny_dir())[0]
    plain = LlamaGuard.load(folder, device="cpu")
    int8 = LlamaGuard.load(folder, device="cpu", quantize="int8")
    examples = list(LLAMA_GUARD_EXAMPLES.values())
    known = compare("known examples", plain, int8, [e.conversation() for e in examples],
                    [e.excluded for e in examples], rounds)
    rows = read_dataset(XSTEST, "xstest").rows[:limit]
    xstest = compare(f"XSTest ({len(rows)} prompts)", plain, int8,
                     [conversation_for(r) for r in rows], [()] * len(rows), rounds)
    t_int8, t_plain = known[0] + xstest[0], known[1] + xstest[1]
    print(f"lg4_int8_vs_bf16_p_unsafe: ratio={t_int8 / t_plain:.2f}")
    print(f"  int8 {t_int8:.2f} s, unquantized ({plain.describe().dtype} on the CPU: the engine's "
          f"dtype here; bf16 on CUDA) {t_plain:.2f} s, {rounds} rounds; int8 weight-only saves "
          "memory, not time, on a CPU",
          flush=True)


# -- memory, counted from the model's layers ---------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """Parameters of Llama Guard 4 by what `--quantize` does with them."""

    decoder_weights: int  # linear weights of the decoder layers: quantized
    decoder_rows: int  # their output rows (one scale each)
    kept: int  # everything else: embeddings, norms, the answer head, vision tower, projector
    largest_linear: int  # the biggest quantized weight (its transient full-precision copy)

    @classmethod
    def of(cls, model: torch.nn.Module) -> Counts:
        weights = rows = largest = 0
        for name, module in model.named_modules():
            if name.startswith("language_model.model.layers.") and isinstance(
                    module, torch.nn.Linear):
                weights += module.weight.numel()
                rows += module.weight.shape[0]
                largest = max(largest, module.weight.numel())
        total = sum(p.numel() for p in model.parameters())
        return cls(weights, rows, total - weights, largest)

    def weight_bytes(self, option: str, element: int = 2) -> float:
        if option == "none":
            quantized = self.decoder_weights * element
        elif option == "nf4":
            quantized = self.decoder_weights * NF4_PER_WEIGHT
        else:
            scale = element if option == "int8" else ROW_SCALE["fp8"]
            quantized = self.decoder_weights + self.decoder_rows * scale
        return quantized + self.kept * element


def real_model() -> torch.nn.Module:
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    real = json.loads(CONFIGS.read_text())["llama_guard_4"]
    config = copy.deepcopy(real["config"])
    config.pop("model_type")
    with torch.device("meta"):  # shapes only: no weight is allocated
        model = Llama4ForConditionalGeneration(Llama4Config(**config))
    return model


def workload_bytes(model: torch.nn.Module) -> tuple[int, float, float]:
    """(tokens, KV cache bytes, prefill activation peak bytes) in bf16 for a 1,000-token
    conversation with 5 images of 672 x 672 pixels (2 x 2 tiles and a global view each)."""
    text, vision = model.config.text_config, model.config.vision_config
    side = vision.image_size // vision.patch_size
    tile_tokens = round(side * side * vision.pixel_shuffle_ratio ** 2)
    tiles = 2 * 2 + 1
    tokens = TEXT_TOKENS + IMAGES * tiles * tile_tokens + NEW_TOKENS
    kv = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * 2 * tokens
    # The widest tensors alive at once in one decoder layer's prefill (SDPA never holds the
    # scores): the residual and the normed input, q, k, v, and the MLP's gate, up and product.
    width = (2 * text.hidden_size + (text.num_attention_heads + 2 * text.num_key_value_heads)
             * text.head_dim + 3 * text.intermediate_size_mlp)
    decoder = tokens * width * 2
    patches = side * side + 1
    tower = (IMAGES * tiles * patches * (2 * vision.hidden_size + vision.intermediate_size) * 2)
    return tokens, kv, max(decoder, tower)


def check_against_tiny() -> None:
    """The counting against the storage of the tiny model really quantized here."""
    folder = build_tiny_models(default_tiny_dir())[0]
    guard = LlamaGuard.load(folder, device="cpu", quantize="int8")
    stored = 0
    for p in guard.model.parameters():
        data = p.data
        names = getattr(data, "tensor_data_names", None)
        parts = [getattr(data, n) for n in names] if names else [data]
        stored += sum(t.numel() * t.element_size() for t in parts)
    element = next(guard.model.language_model.lm_head.parameters()).element_size()
    counted = Counts.of(guard.model).weight_bytes("int8", element)
    print(f"  counting checked on the tiny model quantized here (int8, {element}-byte scales and "
          f"kept weights): counted {counted:,.0f} bytes, stored {stored:,} bytes", flush=True)
    if counted != stored:
        raise SystemExit("the memory counting does not match the quantized model's storage")


def memory_table() -> None:
    model = real_model()
    counts = Counts.of(model)
    tokens, kv, activations = workload_bytes(model)
    print(f"memory: Llama Guard 4 at its real shapes ({counts.decoder_weights + counts.kept:,} "
          f"parameters; {counts.decoder_weights:,} in the decoder's linear layers are quantized, "
          f"{counts.kept:,} stay bf16); computed from the layers, not measured (no GPU here)")
    print(f"  workload: {TEXT_TOKENS:,} text tokens + {IMAGES} images of 672 px (5 tiles, "
          f"720 tokens each) + {NEW_TOKENS} generated = {tokens:,} tokens: KV cache "
          f"{kv / GB:.2f} GB, prefill activations about {activations / GB:.2f} GB")
    print("  | --quantize | weights | + conversation (KV + activations) | smallest card |")
    print("  |---|---|---|---|")
    for option in OPTIONS:
        weights = counts.weight_bytes(option)
        # Allowance for a weight-only kernel that makes a layer's full-precision weight for a
        # prefill's product (bitsandbytes does; at most 84 MB here, so it is kept conservative).
        transient = counts.largest_linear * 2 if option in ("int8", "nf4") else 0
        total = weights + kv + activations + transient
        card = next(size for size in (16, 24, 40, 48, 80, 141) if total / GB < size * 0.9)
        print(f"  | {option} | {weights / GB:.1f} GB | {total / GB:.1f} GB | {card} GB |")
    print("  (plus the CUDA context and the allocator's slack, about 0.5-1 GB, not counted; "
          "'smallest card' leaves 10% of it free)", flush=True)
    check_against_tiny()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="XSTest prompts to judge (default: all)")
    parser.add_argument("--rounds", type=int, default=2, help="passes per model, alternated")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier on shared cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torchao
    import transformers

    print(f"versions: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"torchao {torchao.__version__}; torch threads {torch.get_num_threads()}", flush=True)
    memory_table()
    bench_tiny(args.limit, args.rounds)


if __name__ == "__main__":
    main()
