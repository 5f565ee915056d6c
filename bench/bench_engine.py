"""Engine benchmarks: our classify vs the plain transformers recipe; batched Prompt Guard windows.

    python bench/bench_engine.py            # tiny models, CPU
    python bench/bench_engine.py --model meta-llama/Llama-Guard-4-12B --prompt-guard 86m  # GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import device_line, report, side_by_side  # noqa: E402
from guard.engines.llama_guard import LlamaGuard  # noqa: E402
from guard.engines.loading import default_tiny_dir  # noqa: E402
from guard.engines.prompt_guard import PromptGuard  # noqa: E402
from guard.testing.tiny import JAILBREAK, LLAMA_GUARD_EXAMPLES, build_tiny_models, filler  # noqa: E402


def recipe_messages(conversation):
    """The announcement's message format, images given as PIL objects."""
    return [{"role": t.role, "content": [{"type": "text", "text": t.text}]
             + [{"type": "image", "image": image} for image in t.images]}
            for t in conversation.turns]


def bench_classify(guard: LlamaGuard, n: int = 50) -> None:
    examples = [e for e in LLAMA_GUARD_EXAMPLES.values() if not e.excluded]
    conversations = [examples[i % len(examples)].conversation() for i in range(n)]
    messages = [recipe_messages(c) for c in conversations]
    processor, model = guard.processor, guard.model

    answers: dict[str, dict[int, str]] = {"ours": {}, "recipe": {}}

    def ours(i):
        answers["ours"][i] = guard.classify(conversations[i]).raw_output.strip()

    def baseline(i):
        inputs = processor.apply_chat_template(
            messages[i], tokenize=True, add_generation_prompt=True, return_tensors="pt",
            return_dict=True).to(model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
        answers["recipe"][i] = processor.batch_decode(
            out[:, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)[0].strip()

    t_ours, t_base = side_by_side(ours, baseline, n, rounds=2)
    agree = sum(answers["ours"][i] == answers["recipe"][i] for i in range(n))
    report("llama_guard_classify_vs_transformers_recipe", t_ours, t_base, 2 * n,
           f"{n} conversations ({sum(bool(c.images) for c in conversations)} with images); "
           f"same answer {agree}/{n}; ours also returns p_unsafe")


def bench_stop_at_safe(guard: LlamaGuard, n: int = 40) -> None:
    """Decode steps that cost only what they must: a 'safe' answer stops at 'safe'."""
    examples = list(LLAMA_GUARD_EXAMPLES.values())
    items = [examples[i % len(examples)] for i in range(n)]
    verdicts: dict[str, dict[int, object]] = {"ours": {}, "full": {}}

    def run(key: str, stop: bool, i: int) -> None:
        guard.stop_at_safe = stop
        verdicts[key][i] = guard.classify(items[i].conversation(), items[i].excluded)

    try:
        t_ours, t_base = side_by_side(lambda i: run("ours", True, i),
                                      lambda i: run("full", False, i), n)
    finally:
        guard.stop_at_safe = True
    same = sum(verdicts["ours"][i].raw_output == verdicts["full"][i].raw_output
               and verdicts["ours"][i].p_unsafe == verdicts["full"][i].p_unsafe for i in range(n))
    safe = sum(v.verdict == "safe" for v in verdicts["full"].values())
    report("llama_guard_stop_at_safe_vs_full_answer", t_ours, t_base, 3 * n,
           f"{n} conversations, {safe} answered safe; same answer and p_unsafe {same}/{n}; a safe "
           "answer skips the step that only writes the end token")


def bench_windows(guard: PromptGuard, words: int = 3300) -> None:
    text = filler(words, seed=1) + " " + JAILBREAK

    def batched(_):
        return guard.score_many([text], max_tokens=10**9)[0].p_malicious

    def default(_):
        return guard.score(text).p_malicious

    def one_at_a_time(_):
        # The same end to end (tokenize, cut into windows), one forward pass per window.
        return guard.score_many([text], max_batch=1)[0].p_malicious

    assert abs(batched(0) - one_at_a_time(0)) < 1e-4
    score = guard.score(text)
    details = (f"{score.tokens} tokens in {score.windows} windows of {guard.window}; both "
               "tokenize and split the text")
    t_ours, t_base = side_by_side(batched, one_at_a_time, 5)
    report("prompt_guard_batched_windows_vs_one_at_a_time", t_ours, t_base, 15,
           details + "; ours runs all windows as one batch")
    t_ours, t_base = side_by_side(default, one_at_a_time, 5)
    report("prompt_guard_default_vs_one_at_a_time", t_ours, t_base, 15,
           details + f"; the default on {guard.model.device.type} is at most "
           f"{guard.default_max_tokens} padded tokens per pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="Llama Guard id or folder (default: tiny model)")
    parser.add_argument("--prompt-guard", help="86m, 22m or a folder (default: tiny model)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    lg_dir, pg_dir = build_tiny_models(default_tiny_dir())
    guard = LlamaGuard.load(args.model or lg_dir, device=args.device)
    prompt_guard = PromptGuard.load(args.prompt_guard or pg_dir, device=args.device)
    print(device_line(str(guard.model.device)), flush=True)
    torch.manual_seed(0)
    bench_classify(guard)
    bench_stop_at_safe(guard)
    bench_windows(prompt_guard)


if __name__ == "__main__":
    main()
