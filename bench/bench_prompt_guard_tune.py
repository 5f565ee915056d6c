"""Prompt Guard 2 tuning on this machine: seconds per epoch for 1,000 labelled messages, 22M and 86M.

Each model is built at its real shape (bench/full_size_configs.json: DeBERTa-v3-xsmall and
mDeBERTa-v3-base configs, their real vocabularies of 128,100 and 251,000 rows) with random
weights, and tuned through the same `TrainingArguments` and Trainer as `python -m guard.tune
prompt-guard` (full fine-tuning by default: every weight, embeddings included, AdamW). The
messages are harmless filler text of `--tokens` tokens each, tokenized by the tiny Prompt
Guard's WordPiece tokenizer (ids below 400: the embedding matrix, its gradient and the optimizer
still have the real vocabulary's size, which is what costs; the ids only pick rows).

A full epoch of the 86M model takes far longer than a benchmark should here, so each size trains
`--steps` optimizer steps (after one warm-up step) and the epoch is extrapolated: the median step
time x ceil(messages / batch size). After every timed step the same step's messages are scored
by the engine (`PromptGuard.score_many`, as the app scores them: eval mode, no gradients) on a
copy of the model, so training and inference alternate in one process under the same load.

    prompt_guard_tune_epoch_vs_inference_pass: ratio=X.XX   (22M: one epoch / one inference pass
                                                           over the same messages)

    python bench/bench_prompt_guard_tune.py                     # 22M and 86M, 128-token messages
    python bench/bench_prompt_guard_tune.py --sizes 22m --steps 5 --tokens 512
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    DataCollatorWithPadding,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    IntervalStrategy,
    PrinterCallback,
    Trainer,
    TrainerCallback,
)

from bench.common import device_line  # noqa: E402
from guard.engines.loading import default_tiny_dir  # noqa: E402
from guard.engines.prompt_guard import PromptGuard  # noqa: E402
from guard.testing.tiny import build_tiny_models, filler  # noqa: E402
from guard.tune.prompt_guard import PGSettings, encode, trainable, training_arguments  # noqa: E402
from guard.tune.prompt_guard_data import PGExample  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "full_size_configs.json"
SIZES = {"22m": "prompt_guard_2_22m", "86m": "prompt_guard_2_86m"}


def messages(tokenizer, n: int, tokens: int) -> list[PGExample]:
    """n filler messages of `tokens` tokens each ([CLS] and [SEP] included), half labelled
    malicious."""
    out = []
    for i in range(n):
        ids = tokenizer(filler(tokens * 2, seed=i), truncation=True, max_length=tokens,
                        add_special_tokens=False)["input_ids"][:tokens - 2]
        out.append(PGExample(f"m{i}", tokenizer.decode(ids), bool(i % 2)))
    return out


class Interleave(TrainerCallback):
    """Times each optimizer step, then scores that step's messages with the inference copy."""

    def __init__(self, engine: PromptGuard, texts: list[str], per_step: int) -> None:
        self.engine, self.texts, self.per_step = engine, texts, per_step
        self.train_s: list[float] = []
        self.infer_s: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.train_s.append(time.perf_counter() - self._began)
        start = (state.global_step - 1) * self.per_step % len(self.texts)
        batch = (self.texts * 2)[start:start + self.per_step]
        began = time.perf_counter()
        self.engine.score_many(batch)
        self.infer_s.append(time.perf_counter() - began)


def train_flops(model, tokens: int) -> float:
    """FLOPs of one training step on one message (forward and backward, about 3 forwards): the
    weights' 2 FLOPs per parameter per token (the word embeddings are a lookup), and DeBERTa's
    attention (content-content and output, 4·L²·d; content-position both ways, 4·L·2k·d)."""
    c = model.config
    weights = sum(p.numel() for p in model.parameters()) - c.vocab_size * c.hidden_size
    attention = c.num_hidden_layers * (4 * tokens ** 2 * c.hidden_size
                                       + 4 * tokens * 2 * c.position_buckets * c.hidden_size)
    return 3 * (2 * weights * tokens + attention)


def measure(size: str, tokenizer, args: argparse.Namespace) -> dict[str, float]:
    config = json.loads(CONFIGS.read_text())[SIZES[size]]["config"]
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(**config)).eval()
    params = sum(p.numel() for p in model.parameters())
    flops = train_flops(model, args.tokens) * args.messages
    model.to(args.device)
    base = PromptGuard(model, tokenizer, name=f"random {size}")
    engine = PromptGuard(copy.deepcopy(model).eval(), tokenizer, name=f"random {size} (infer)")
    settings = PGSettings(method=args.method, max_steps=args.steps + 1,
                          batch_size=args.batch_size, save_steps=10**9)
    per_step = args.batch_size
    examples = messages(tokenizer, per_step * (args.steps + 1), args.tokens)
    train_set, _ = encode(base, tuple(examples), "none")
    timer = Interleave(engine, [e.text for e in examples], per_step)
    with tempfile.TemporaryDirectory() as tmp:
        arguments = training_arguments(settings, Path(tmp), use_cpu=args.device == "cpu")
        arguments.save_strategy = IntervalStrategy.NO  # a checkpoint is not part of the epoch
        trainer = Trainer(model=trainable(base, settings), args=arguments,
                          train_dataset=train_set,
                          data_collator=DataCollatorWithPadding(tokenizer), callbacks=[timer])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    train = statistics.median(timer.train_s[1:])  # the first step warms up
    infer = statistics.median(timer.infer_s[1:])
    steps_per_epoch = math.ceil(args.messages / args.batch_size)
    return {"params": params, "flops": flops, "step_s": train, "infer_s": infer,
            "epoch_s": train * steps_per_epoch, "pass_s": infer * steps_per_epoch,
            "train_total": sum(timer.train_s[1:]), "infer_total": sum(timer.infer_s[1:]),
            "timed": len(timer.train_s) - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="22m,86m")
    parser.add_argument("--messages", type=int, default=1000, help="messages per epoch")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per message (<= 512)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--method", default="full", choices=("full", "lora"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--gpu-tflops", type=float, default=50.0,
                        help="sustained TFLOP/s assumed for the GPU estimate (an A100 or H100 "
                             "in float32/TF32 on a small model: about a third of TF32 peak)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine two spin-waiting "
                             "threads measured slower and far noisier)")
    parser.add_argument("--steps", type=int, default=1,
                        help="timed steps per size after the warm-up (3: steadier, 3x longer)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_models(default_tiny_dir())[1])
    if args.device == "cpu":
        print(f"device: cpu, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
              "(real shapes, random weights)")
    else:
        print(device_line(args.device))
    print(f"torch threads {torch.get_num_threads()}; {args.method} fine-tuning, batch "
          f"{args.batch_size}, {args.tokens}-token messages, {args.steps} timed step(s) per size "
          f"after one warm-up; epoch = median step x {math.ceil(args.messages / args.batch_size)}"
          " steps (extrapolated)")
    results = {}
    for size in args.sizes.split(","):
        results[size] = r = measure(size.strip().lower(), tokenizer, args)
        if len(results) == 1:
            print(f"prompt_guard_tune_epoch_vs_inference_pass: "
                  f"ratio={r['train_total'] / r['infer_total']:.2f}")
        print(f"  {size}: {r['params'] / 1e6:.0f}M parameters with embeddings; "
              f"{r['step_s']:.2f} s per training step vs {r['infer_s']:.2f} s to score the same "
              f"{args.batch_size} messages (ratio {r['step_s'] / r['infer_s']:.2f}, "
              f"{r['timed']} steps)", flush=True)
        print(f"  {size}: {r['epoch_s']:.0f} s per epoch of {args.messages} messages "
              f"({r['epoch_s'] / 60:.1f} min), one inference pass {r['pass_s']:.0f} s",
              flush=True)
        print(f"  {size}: {r['flops'] / 1e12:.0f} TFLOPs per epoch; on a GPU at "
              f"{args.gpu_tflops:.0f} TFLOP/s sustained about {r['flops'] / args.gpu_tflops / 1e12:.1f}"
              f" s of compute per epoch (estimate from FLOPs, not measured)", flush=True)


if __name__ == "__main__":
    main()
