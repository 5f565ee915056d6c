"""Llama Guard 4 and Prompt Guard 2 at their real shapes, random weights, against this device's floor.

Every `NAME: ratio=X.XX` line divides a measured time by the floor of the same work on this device:
for each forward pass, the larger of its FLOPs over the matmul throughput and its bytes over the
copy bandwidth, both measured at the start of the run (a large matmul, a large device copy). A
ratio of 1 would be a perfect engine; the floor of a decode step is reading every weight once.

The weights are random and the tokenizers are the tiny test ones (ids far below the real
vocabulary): timing needs the real shapes, not the real answers. A random model would ramble for
40 tokens, so the bench makes it write the real model's answer ("\\n\\n", "safe", "<|eot|>") through
a sequence bias in its generation config: `LlamaGuard.classify` runs unchanged, step for step.

    python bench/bench_full_size.py                # full shape on CUDA (12B, bf16), smoke on a CPU
    python bench/bench_full_size.py --smoke        # scaled-down shape, 1-2 minutes on a CPU
    python bench/bench_full_size.py --tiny-smoke   # smallest shape (what the test runs)

The real shapes and where they come from: bench/full_size_configs.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: E402

from guard.core import limits  # noqa: E402
from guard.core.categories import Family  # noqa: E402
from guard.core.conversation import Conversation, Turn  # noqa: E402
from guard.core.prompts import render  # noqa: E402
from guard.core.verdict import p_unsafe_from_logits  # noqa: E402
from guard.engines.llama_guard import MAX_NEW_TOKENS, LlamaGuard, pack_by_budget, pick_device  # noqa: E402
from guard.engines.prompt_guard import PromptGuard  # noqa: E402
from guard.eval.runner import DEFAULT_BATCH_SIZE  # noqa: E402
from guard.explore import category_scores, sweep  # noqa: E402
from guard.testing._tiny_deberta import build_tokenizer as build_deberta_tokenizer  # noqa: E402
from guard.testing._tiny_llama import build_tokenizer as build_llama_tokenizer  # noqa: E402
from guard.testing.tiny import JAILBREAK, LLAMA_GUARD_EXAMPLES, PROMPT_GUARD_EXAMPLES, filler  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "full_size_configs.json"
TEXT_TOKENS = (200, 1000, 4000)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
# Per shape: timed runs (median), warm-up runs, evaluation rows.
RUNS = {"full": (5, 1, 64), "smoke": (2, 1, 64), "tiny-smoke": (1, 0, 16)}
SAFE_ANSWER, UNSAFE_ANSWER = "safe", "unsafe\nS1"

# Scaled-down shapes: the real config with these fields replaced (4 text layers: a multiple of
# the 4 that Llama 4's layer pattern repeats over).
SHAPES = {
    "smoke": {
        "text": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=64, intermediate_size=512,
                     intermediate_size_mlp=512, vocab_size=2048),
        "vision": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=256, image_size=56, patch_size=14, vision_output_dim=128,
                       projector_input_dim=128, projector_output_dim=128),
        "images": dict(tile=56, max_patches=4, pixels=112),
        "prompt_guard": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=256, vocab_size=1024, position_buckets=64,
                             pooler_hidden_size=128),
    },
    "tiny-smoke": {
        "text": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, intermediate_size=128,
                     intermediate_size_mlp=128, vocab_size=1024),
        "vision": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=128, image_size=28, patch_size=7, vision_output_dim=64,
                       projector_input_dim=64, projector_output_dim=64),
        "images": dict(tile=28, max_patches=4, pixels=56),
        "prompt_guard": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, vocab_size=1024, position_buckets=64,
                             pooler_hidden_size=32),
    },
}
# Full shape: 672-pixel images, 2 x 2 tiles and a global view, 720 image tokens each.
FULL_IMAGES = dict(pixels=672)


# -- measuring ---------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int = 1) -> float:
    """Median seconds of one call of `fn`, the device drained before and after each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Peaks:
    """What this device was measured to sustain, in this run."""

    flops: float  # matmul FLOP/s in the Llama Guard dtype
    fp32_flops: float  # Prompt Guard runs in float32 (PromptGuard.load keeps the default dtype)
    bandwidth: float  # bytes/s read plus written by a large device-to-device copy


def measure_peaks(device: torch.device, dtype: torch.dtype) -> Peaks:
    big = device.type == "cuda"
    n, copy_bytes, repeats = (8192, 2 << 30, 10) if big else (512, 32 << 20, 3)

    def matmul_rate(kind: torch.dtype) -> float:
        a = torch.randn(n, n, device=device, dtype=kind)
        b = torch.randn(n, n, device=device, dtype=kind)
        return 2 * n ** 3 / timed(lambda: a @ b, device, repeats=repeats, warmup=2)

    def copy_rate() -> float:  # its buffers are freed on return, before the model is built
        src = torch.empty(copy_bytes // 4, dtype=torch.float32, device=device).uniform_()
        dst = torch.empty_like(src)
        return 2 * copy_bytes / timed(lambda: dst.copy_(src), device, repeats=repeats, warmup=2)

    fp32 = matmul_rate(torch.float32)
    return Peaks(fp32 if dtype == torch.float32 else matmul_rate(dtype), fp32, copy_rate())


@dataclass(frozen=True)
class Work:
    """One forward pass: FLOPs to compute and bytes to move at the least."""

    flops: float
    bytes: float

    def seconds(self, rate: float, bandwidth: float) -> float:
        return max(self.flops / rate, self.bytes / bandwidth)


def linear_params(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


@dataclass(frozen=True)
class GuardCost:
    """The floor of Llama Guard 4's passes, counted from the model's own modules and config."""

    decoder: int  # linear weights of the decoder layers
    head: int  # the lm_head, run on the positions whose logits are kept
    layers: int
    q_width: int  # attention heads x head_dim
    kv_token_bytes: int  # keys and values of one token, all layers
    vision: int  # patch embedding and encoder layers, over every patch of a tile
    adapter: int  # vision adapter and projector, over a tile's tokens after pixel shuffle
    vision_layers: int
    vision_width: int
    patches: int  # per tile, with the class token
    tile_tokens: int
    element: int  # bytes per weight

    @classmethod
    def of(cls, model: torch.nn.Module) -> GuardCost:
        text, vis = model.config.text_config, model.config.vision_config
        side = vis.image_size // vis.patch_size
        element = next(model.parameters()).element_size()
        adapter = linear_params(model.vision_model.vision_adapter)
        return cls(
            decoder=linear_params(model.language_model.model.layers),
            head=linear_params(model.language_model.lm_head), layers=text.num_hidden_layers,
            q_width=text.num_attention_heads * text.head_dim,
            kv_token_bytes=2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim
            * element,
            vision=linear_params(model.vision_model) - adapter,
            adapter=adapter + linear_params(model.multi_modal_projector),
            vision_layers=vis.num_hidden_layers, vision_width=vis.hidden_size,
            patches=side * side + 1, tile_tokens=round(side * side * vis.pixel_shuffle_ratio ** 2),
            element=element)

    @property
    def weight_bytes(self) -> int:
        return (self.decoder + self.head) * self.element

    def prefill(self, lengths: Sequence[int]) -> Work:
        """One pass over whole prompts (causal attention), logits of the last position only."""
        flops = sum(2 * self.decoder * n + 2 * self.layers * n * n * self.q_width + 2 * self.head
                    for n in lengths)
        return Work(flops, self.weight_bytes + sum(lengths) * self.kv_token_bytes)

    def decode(self, contexts: Sequence[int]) -> Work:
        """One generated token per row, each reading its row's cache."""
        flops = sum(2 * (self.decoder + self.head) + 4 * self.layers * c * self.q_width
                    for c in contexts)
        return Work(flops, self.weight_bytes + sum(contexts) * self.kv_token_bytes)

    def extend(self, rows: int, tokens: int, context: int) -> Work:
        """`rows` continuations of `tokens` each over one shared cached prompt, logits at every
        position (category scores); at the floor the shared cache is read once."""
        flops = rows * tokens * (2 * (self.decoder + self.head)
                                 + 4 * self.layers * (context + tokens) * self.q_width)
        return Work(flops, self.weight_bytes + context * self.kv_token_bytes)

    def tiles(self, count: int) -> Work:
        """The vision tower and projector over `count` tiles (bidirectional attention)."""
        per_tile = (2 * self.vision * self.patches + 2 * self.adapter * self.tile_tokens
                    + 4 * self.vision_layers * self.patches ** 2 * self.vision_width)
        return Work(count * per_tile, (self.vision + self.adapter) * self.element) if count \
            else Work(0, 0)


@dataclass(frozen=True)
class ClassifierCost:
    """The floor of Prompt Guard's DeBERTa-v2 passes over 512-token windows."""

    linear: int
    layers: int
    width: int
    element: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ClassifierCost:
        return cls(linear_params(model), model.config.num_hidden_layers, model.config.hidden_size,
                   next(model.parameters()).element_size())

    def windows(self, count: int, length: int) -> Work:
        # Disentangled attention: content-content scores and values, plus the content-to-position
        # and position-to-content scores, four n x n x width products a layer.
        per_window = 2 * self.linear * length + 8 * self.layers * length * length * self.width
        return Work(count * per_window, self.linear * self.element)


def report(name: str, seconds: float, floor: float, details: str) -> None:
    print(f"{name}: ratio={seconds / floor:.2f}")
    print(f"  ours {seconds * 1e3:.2f} ms, floor {floor * 1e3:.3f} ms; {details}", flush=True)


# -- building the models -----------------------------------------------------------------------

def real_configs() -> dict:
    return json.loads(CONFIGS.read_text())


def tokenizer_corpus() -> list[str]:
    """What the tiny tokenizer learns from: Guard Lab's own prompts, answers and filler text."""
    examples = LLAMA_GUARD_EXAMPLES.values()
    return ([render(e.conversation(), e.excluded) for e in examples]
            + ["\n\n" + e.answer for e in examples] * 20 + [filler(200, s) for s in range(3)])


def build_llama_guard(mode: str, device: torch.device, dtype: torch.dtype) -> LlamaGuard:
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4ImageProcessor,
        Llama4Processor,
    )

    real = real_configs()["llama_guard_4"]
    config = copy.deepcopy(real["config"])
    config.pop("model_type")
    text, vision = config["text_config"], config["vision_config"]
    images = dict(real["image_processor"])
    if mode != "full":
        text.update(SHAPES[mode]["text"])
        vision.update(SHAPES[mode]["vision"])
        images.update(SHAPES[mode]["images"])
    text["no_rope_layers"] = [1] * text["num_hidden_layers"]
    tokenizer = build_llama_tokenizer(tokenizer_corpus())
    if len(tokenizer) > text["vocab_size"]:
        raise SystemExit(f"the tokenizer has {len(tokenizer)} ids, the model {text['vocab_size']}")
    ids = tokenizer.convert_tokens_to_ids
    eos = [ids("<|end_of_text|>"), ids("<|eom|>"), ids("<|eot|>")]
    text.update(bos_token_id=ids("<|begin_of_text|>"), eos_token_id=eos,
                pad_token_id=ids("<|finetune_right_pad|>"))
    config.update(boi_token_index=ids("<|image_start|>"), eoi_token_index=ids("<|image_end|>"),
                  image_token_index=ids("<|patch|>"))
    # Built where it runs: 24 GB of weights never pass through host memory.
    with torch.device(device):
        model = Llama4ForConditionalGeneration._from_config(Llama4Config(**config), dtype=dtype)
    model.eval()
    generation = model.generation_config
    generation.eos_token_id, generation.pad_token_id = eos, text["pad_token_id"]
    generation.do_sample = False
    processor = Llama4Processor(
        image_processor=Llama4ImageProcessor(size={"height": images["tile"], "width": images["tile"]},
                                             max_patches=images["max_patches"]),
        tokenizer=tokenizer, patch_size=vision["patch_size"],
        pixel_shuffle_ratio=vision["pixel_shuffle_ratio"])
    return LlamaGuard(model, processor, family=Family.LLAMA_GUARD_4,
                      name=f"Llama Guard 4 shape ({mode}, random weights)")


def build_prompt_guard(key: str, mode: str, device: torch.device, tokenizer) -> PromptGuard:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = dict(real_configs()[key]["config"])
    config.pop("model_type")
    if mode != "full":
        config.update(SHAPES[mode]["prompt_guard"])
    config["pad_token_id"] = tokenizer.pad_token_id
    with torch.device(device):
        model = DebertaV2ForSequenceClassification(DebertaV2Config(**config))
    return PromptGuard(model.eval(), tokenizer, name=f"{key} shape ({mode}, random weights)")


def script_answer(guard: LlamaGuard, answer: str) -> list[int]:
    """Make the random model write "\\n\\n" + `answer` + <|eot|> after any prompt, as the real one
    writes its verdict: each next token gets a larger bias, keyed on the prompt's last token and
    the answer so far. Returns the answer's ids."""
    tokenizer = guard.tokenizer
    answer_ids = tokenizer.encode("\n\n" + answer, add_special_tokens=False)
    answer_ids.append(tokenizer.convert_tokens_to_ids("<|eot|>"))
    anchor = tokenizer.convert_tokens_to_ids("<|header_end|>")
    guard.model.generation_config.sequence_bias = [
        [[anchor, *answer_ids[:i + 1]], 1e4 * (i + 1)] for i in range(len(answer_ids))]
    return answer_ids


# -- inputs ------------------------------------------------------------------------------------

def prompt_length(guard: LlamaGuard, conversation: Conversation, suffix: str = "",
                  excluded: Sequence[str] = ()) -> int:
    prompt = guard.plan(conversation, excluded).prompt + suffix
    return int(guard.prepare([prompt], list(conversation.images))["input_ids"].shape[1])


def text_conversation(guard: LlamaGuard, target: int) -> Conversation:
    """One user message of filler whose whole prompt is `target` tokens, or as close as it gets
    (the prompt's fixed part alone may be longer)."""
    def build(words: int) -> Conversation:
        return Conversation.build([Turn("user", filler(words, seed=target))])

    low, high = 1, max(target, 2)
    while low < high:  # the longest message whose prompt fits the target
        middle = (low + high + 1) // 2
        if prompt_length(guard, build(middle)) <= target:
            low = middle
        else:
            high = middle - 1
    return build(low)


def image_conversation(count: int, pixels: int) -> Conversation:
    rng = np.random.default_rng(count)
    images = tuple(Image.fromarray(rng.integers(0, 256, (pixels, pixels, 3), dtype=np.uint8))
                   for _ in range(count))
    return Conversation.build([Turn("user", "Describe these pictures. " + filler(40), images)])


def tile_count(guard: LlamaGuard, images: Sequence[Image.Image]) -> int:
    if not images:
        return 0
    ratios = guard.processor.image_processor(list(images), return_tensors="pt")["aspect_ratios"]
    return sum(h * w + (1 if h * w > 1 else 0) for h, w in ratios.tolist())


def eval_conversations(n: int) -> list[Conversation]:
    """Short text rows like an evaluation set's: the tiny examples' prompts and answers, cycled."""
    texts = [e.turns for e in LLAMA_GUARD_EXAMPLES.values() if not any(c for *_, c in e.turns)]
    return [Conversation.build(Turn(role, text) for role, text, _ in texts[i % len(texts)])
            for i in range(n)]


def window_text(guard: PromptGuard, windows: int) -> str:
    """Filler that fills `windows` windows of 512 tokens, the last one nearly full."""
    body = guard.window - 2
    words = windows * body
    while len(guard.tokenizer(filler(words, seed=7), add_special_tokens=False)["input_ids"]) \
            > windows * body:
        words -= 1
    return filler(words, seed=7)


# -- the benchmarks ----------------------------------------------------------------------------

class Bench:
    def __init__(self, guard: LlamaGuard, peaks: Peaks, repeats: int, warmup: int) -> None:
        self.guard, self.peaks, self.repeats, self.warmup = guard, peaks, repeats, warmup
        self.device = guard.model.device
        self.cost = GuardCost.of(guard.model)

    def floor(self, *passes: Work) -> float:
        return sum(w.seconds(self.peaks.flops, self.peaks.bandwidth) for w in passes)

    def time(self, fn: Callable[[], object], *, repeats: int | None = None) -> float:
        return timed(fn, self.device, repeats=repeats or self.repeats, warmup=self.warmup)

    def answer_floor(self, lengths: Sequence[int], steps: int, tiles: int = 0) -> tuple[float, float]:
        """(prefill, decode) floors of a batched generate writing `steps` tokens per row."""
        prefill = self.floor(self.cost.tiles(tiles), self.cost.prefill(lengths))
        decode = self.floor(*(self.cost.decode([n + i for n in lengths]) for i in range(1, steps)))
        return prefill, decode

    def prefill_only(self, conversation: Conversation, suffix: str = "") -> Callable[[], torch.Tensor]:
        inputs = self.guard.prepare([self.guard.plan(conversation).prompt + suffix],
                                    list(conversation.images))

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return self.guard.model(**inputs, use_cache=True, logits_to_keep=1).logits

        return run

    def conversation(self, name: str, conversation: Conversation, steps: int) -> None:
        guard = self.guard
        n = prompt_length(guard, conversation)
        tiles = tile_count(guard, conversation.images)
        total = self.time(lambda: guard.classify(conversation))
        prefill = self.time(self.prefill_only(conversation))
        answer = guard.classify(conversation).raw_output
        f_prefill, f_decode = self.answer_floor([n], steps, tiles)
        decode = max(total - prefill, 0.0)
        count = len(conversation.images)
        images = f", {count} image{'s' * (count > 1)} in {tiles} tiles" if tiles else ""
        report(name, total, f_prefill + f_decode,
               f"{n} prompt tokens{images}; prefill {prefill * 1e3:.2f} ms (floor "
               f"{f_prefill * 1e3:.3f}, x{prefill / f_prefill:.1f}), decode and the rest "
               f"{decode * 1e3:.2f} ms for {steps - 1} steps (floor {f_decode * 1e3:.3f}, "
               f"x{decode / f_decode:.1f}); answer {answer!r}")

    def evaluation(self, conversations: list[Conversation], steps: int) -> None:
        guard = self.guard
        lengths = [prompt_length(guard, c) for c in conversations]
        prefill, decode = self.answer_floor(lengths, steps)
        floor = prefill + decode  # all rows in one pass: the best any batching can do
        rows = len(conversations)

        def line(name: str, seconds: float, passes: int, how: str) -> None:
            report(name, seconds, floor,
                   f"{rows / seconds:.1f} conversations/s (floor {rows / floor:.1f}) over {rows} "
                   f"rows of {min(lengths)}-{max(lengths)} tokens, {how}: {passes} passes")

        seconds: dict[int | str, float] = {}
        for size in BATCH_SIZES:
            def run(size: int = size) -> None:  # as guard.eval.runner does, batch after batch
                for start in range(0, rows, size):
                    guard.classify_batch(conversations[start:start + size], batch_size=size)

            seconds[size] = self.time(run, repeats=max(1, self.repeats // 2))
            passes = sum(len(pack_by_budget(lengths[s:s + size], limits.TOKEN_BUDGET,
                                            max_rows=size, extra=MAX_NEW_TOKENS))
                         for s in range(0, rows, size))
            line(f"lg4_eval_batch_{size}_vs_floor", seconds[size], passes,
                 f"calls of {size} within the {limits.TOKEN_BUDGET}-token budget")
        seconds["budget"] = self.time(lambda: guard.classify_batch(conversations),
                                      repeats=max(1, self.repeats // 2))
        line("lg4_eval_token_budget_vs_floor", seconds["budget"],
             len(pack_by_budget(lengths, limits.TOKEN_BUDGET, extra=MAX_NEW_TOKENS)),
             f"one call, batch_size=None: rows packed by the {limits.TOKEN_BUDGET}-token budget")
        best = min(seconds, key=seconds.__getitem__)
        default = seconds[DEFAULT_BATCH_SIZE]
        print(f"lg4_eval_default_batch_vs_best: ratio={default / seconds[best]:.2f}")
        print(f"  the evaluation runner's default batch size {DEFAULT_BATCH_SIZE}: "
              f"{rows / default:.1f} conversations/s; the best measured ({best}): "
              f"{rows / seconds[best]:.1f}", flush=True)

    def sweep(self, conversation: Conversation, steps: int) -> None:
        guard = self.guard
        enabled = guard.plan(conversation).enabled_codes
        lengths = [prompt_length(guard, conversation, excluded=ex)
                   for ex in [(), *((c,) for c in enabled)]]
        seconds = self.time(lambda: sweep(guard, conversation))
        prefill, decode = self.answer_floor(lengths, steps)
        passes = len(pack_by_budget(lengths, limits.TOKEN_BUDGET, extra=MAX_NEW_TOKENS))
        report(f"lg4_sweep_{len(lengths)}_variants_vs_floor", seconds, prefill + decode,
               f"{len(lengths)} variants of a {lengths[0]}-token prompt in {passes} passes, "
               f"{steps} tokens each; floor = one batched prefill and {steps - 1} batched steps")

    def category_scores(self, conversation: Conversation) -> None:
        guard = self.guard
        codes = guard.plan(conversation).enabled_codes
        n = prompt_length(guard, conversation, suffix="\n\nunsafe\n")
        width = max(len(guard.tokenizer.encode(c, add_special_tokens=False)) for c in codes)
        seconds = self.time(lambda: category_scores(guard, conversation))
        floor = self.floor(self.cost.prefill([n]), self.cost.extend(len(codes), width, n))
        report("lg4_category_scores_vs_floor", seconds, floor,
               f"a {n}-token prompt, then {len(codes)} codes of up to {width} tokens over its "
               "cache (the engine copies the cache per code; the floor reads it once)")

    # Item 2 of issue 14: cheaper decode steps. Stopping at "safe" is in guard/ (LlamaGuard
    # .stop_at_safe, so `steps` counts without the <|eot|> step); the rest is measured here only.

    def generate(self, conversation: Conversation, suffix: str = "", **options) -> Callable:
        """The engine's generate call (LlamaGuard._run) on one conversation, options added."""
        guard = self.guard
        inputs = guard.prepare([guard.plan(conversation).prompt + suffix],
                               list(conversation.images))

        def run():
            with torch.inference_mode():
                return guard.model.generate(
                    **inputs, do_sample=False, output_logits=True, return_dict_in_generate=True,
                    pad_token_id=guard.pad_id, eos_token_id=guard.eos_ids, **options)

        return run

    def minimal_decode(self, conversations: list[Conversation], steps: int) -> None:
        """The engine's generate without the two steps that carry no information: the leading
        "\\n\\n" goes into the prompt (the model always writes it first), and a row stops at
        "safe" (only <|eot|> can follow). A safe verdict then costs the prefill alone."""
        guard = self.guard
        stop = StoppingCriteriaList([StopAt(guard.safe_id)])
        t_ours = t_base = 0.0
        same, drift = 0, 0.0
        for conversation in conversations:
            run = self.generate(conversation, "\n\n", max_new_tokens=MAX_NEW_TOKENS,
                                stopping_criteria=stop)
            t_ours += self.time(run)
            t_base += self.time(lambda c=conversation: guard.classify(c))
            out, verdict = run(), guard.classify(conversation)
            start = out.sequences.shape[1] - len(out.logits)
            answer = guard.tokenizer.decode(out.sequences[0, start:], skip_special_tokens=True)
            pair = out.logits[0][0, [guard.safe_id, guard.unsafe_id]].float().tolist()
            same += "\n\n" + answer == verdict.raw_output
            drift = max(drift, abs(p_unsafe_from_logits(*pair) - verdict.p_unsafe))
        print(f"lg4_minimal_decode_vs_classify: ratio={t_ours / t_base:.2f}")
        print(f"  ours {t_ours * 1e3:.2f} ms, classify {t_base * 1e3:.2f} ms over "
              f"{len(conversations)} conversations; {len(out.logits) - 1} decode steps instead "
              f"of classify's {steps - 1}; same answer {same}/"
              f"{len(conversations)}, max |p_unsafe diff| {drift:.1e} (prefill and decode "
              "kernels round differently)", flush=True)

    def verdict_only(self, conversation: Conversation) -> None:
        """An unsafe answer with its code line, against stopping once the verdict is written."""
        steps = len(script_answer(self.guard, UNSAFE_ANSWER))
        try:
            full = self.generate(conversation, max_new_tokens=MAX_NEW_TOKENS)
            short = self.generate(conversation, max_new_tokens=2)
            t_full, t_short = self.time(full), self.time(short)
            short_ids = short().sequences
            same = torch.equal(full().sequences[:, :short_ids.shape[1]], short_ids)
        finally:
            script_answer(self.guard, SAFE_ANSWER)
        print(f"lg4_verdict_only_generate_vs_full_answer: ratio={t_short / t_full:.2f}")
        print(f"  2 tokens ('\\n\\n', 'unsafe') {t_short * 1e3:.2f} ms vs the whole answer "
              f"{UNSAFE_ANSWER!r} ({steps} tokens) {t_full * 1e3:.2f} ms; same first tokens: "
              f"{same}; enough where only the verdict counts (sweeps, attributions)", flush=True)

    def static_cache(self, conversation: Conversation, compiled: bool) -> None:
        """A static cache, eager; or, with `compiled`, as transformers runs it on a GPU: the
        decode step compiled on the first call (and again for every new shape)."""
        dynamic = self.generate(conversation, max_new_tokens=MAX_NEW_TOKENS)
        static = self.generate(conversation, max_new_tokens=MAX_NEW_TOKENS,
                               cache_implementation="static", disable_compile=not compiled)
        sync(self.device)
        start = time.perf_counter()
        static_ids = static().sequences
        sync(self.device)
        first = time.perf_counter() - start
        t_dynamic, t_static = self.time(dynamic), self.time(static)
        same = torch.equal(dynamic().sequences, static_ids)
        how = "compiled decode step" if compiled and self.device.type == "cuda" else "eager"
        print(f"lg4_static_cache_vs_dynamic: ratio={t_static / t_dynamic:.2f}")
        print(f"  static cache ({how}) {t_static * 1e3:.2f} ms, its first call {first * 1e3:.0f} "
              f"ms; the default dynamic cache {t_dynamic * 1e3:.2f} ms; same tokens: {same}",
              flush=True)


class StopAt(StoppingCriteria):
    """Ends a row once it has written `token` (for "safe": nothing but <|eot|> follows it)."""

    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return input_ids[:, -1] == self.token


def bench_prompt_guard(label: str, guard: PromptGuard, peaks: Peaks, card_ms: float,
                       repeats: int) -> None:
    device = guard.model.device
    cost = ClassifierCost.of(guard.model)
    one, many = window_text(guard, 1), window_text(guard, 16)
    windows = guard.score(many).windows
    t_one = timed(lambda: guard.score(one), device, repeats=repeats)
    t_many = timed(lambda: guard.score(many), device, repeats=repeats)
    f_one = cost.windows(1, guard.window).seconds(peaks.fp32_flops, peaks.bandwidth)
    passes = -(-windows * guard.window // guard.default_max_tokens)
    f_many = sum(cost.windows(windows // passes, guard.window).seconds(peaks.fp32_flops,
                                                                       peaks.bandwidth)
                 for _ in range(passes))
    shape = f"{cost.linear:,} linear weights, float32"
    report(f"prompt_guard_{label}_window_vs_floor", t_one, f_one,
           f"one {guard.window}-token window through score(); {shape}")
    report(f"prompt_guard_{label}_batched_windows_vs_floor", t_many / windows, f_many / windows,
           f"per window, {windows} windows of one text in {passes} passes "
           f"(default_max_tokens {guard.default_max_tokens})")
    print(f"prompt_guard_{label}_window_vs_card_a100: ratio={t_one * 1e3 / card_ms:.2f}")
    print(f"  ours {t_one * 1e3:.2f} ms per window here, the model card {card_ms} ms on an A100",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="the real shapes (needs about 30 GB of GPU memory)")
    shape.add_argument("--smoke", dest="mode", action="store_const", const="smoke")
    shape.add_argument("--tiny-smoke", dest="mode", action="store_const", const="tiny-smoke")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int,
                        help="torch threads on a CPU (default 1: on shared cores, OpenMP threads "
                        "stall at every barrier; a 200x64 matmul measured 23 ms with 2 threads "
                        "and 0.03 ms with 1 on a loaded 2-core machine)")
    parser.add_argument("--compile-static", action="store_true",
                        help="let transformers compile the decode step for the static-cache line "
                        "(on a GPU the first call then takes minutes)")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    mode = args.mode or ("full" if device.type == "cuda" else "smoke")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    repeats, warmup, rows = RUNS[mode]
    repeats = args.repeats or repeats
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device} ({name}); shape: {mode}; dtype: {str(dtype).removeprefix('torch.')}")
    print(f"versions: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {sys.version.split()[0]}; torch threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    peaks = measure_peaks(device, dtype)
    print(f"peaks: matmul {peaks.flops / 1e12:.2f} TFLOP/s ({str(dtype).removeprefix('torch.')}), "
          f"{peaks.fp32_flops / 1e12:.2f} TFLOP/s (float32); device copy "
          f"{peaks.bandwidth / 1e9:.1f} GB/s", flush=True)

    guard = build_llama_guard(mode, device, dtype)
    bench = Bench(guard, peaks, repeats, warmup)
    weights = sum(p.numel() for p in guard.model.parameters())
    print(f"llama guard 4: {weights:,} parameters ({weights * bench.cost.element / 1e9:.3f} GB), "
          f"attention {guard.model.config._attn_implementation}", flush=True)
    steps = len(script_answer(guard, SAFE_ANSWER))
    if guard.stop_at_safe:  # classify stops at "safe": the step that writes <|eot|> is not run
        steps -= 1
    texts = {n: text_conversation(guard, n) for n in TEXT_TOKENS}
    for n, conversation in texts.items():
        bench.conversation(f"lg4_text_{n}_tokens_vs_floor", conversation, steps)
    pixels = (FULL_IMAGES if mode == "full" else SHAPES[mode]["images"])["pixels"]
    for count in (1, 5):
        bench.conversation(f"lg4_{count}_image{'s' if count > 1 else ''}_vs_floor",
                           image_conversation(count, pixels), steps)
    bench.evaluation(eval_conversations(rows), steps)
    bench.sweep(texts[1000], steps)
    bench.category_scores(texts[1000])
    bench.minimal_decode(list(texts.values()), steps)
    bench.verdict_only(texts[1000])
    bench.static_cache(texts[1000], compiled=args.compile_static)
    if device.type == "cuda":
        print(f"peak GPU memory so far: {torch.cuda.max_memory_allocated() / 1e9:.1f} GB")
    del guard, bench
    if device.type == "cuda":
        torch.cuda.empty_cache()

    texts = [t for t, _ in PROMPT_GUARD_EXAMPLES.values()] + [filler(300, s) for s in range(10)]
    tokenizer = build_deberta_tokenizer(texts + [JAILBREAK])
    real = real_configs()
    for key, label in (("prompt_guard_2_86m", "86m"), ("prompt_guard_2_22m", "22m")):
        prompt_guard = build_prompt_guard(key, mode, device, tokenizer)
        bench_prompt_guard(label, prompt_guard, peaks, real[key]["card_ms_per_window_a100"],
                           repeats)
        del prompt_guard


if __name__ == "__main__":
    main()
