"""`--quantize`: the tiny Llama Guard 4 in torchao int8 on the CPU keeps its known answers; what
a machine cannot run is refused before any weight is read, with what to use instead; the
quantization is part of the model's name wherever a result is recorded.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import REPO, SHARED, tiny_cache_dir

from guard.engines import loading
from guard.engines.llama_guard import LlamaGuard
from guard.engines.quantize import QuantizeRefused, refusal
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES
from labels import ExampleInput, LabelInput, ModelOutput, Store
from labels.runs import Runs

pytestmark = pytest.mark.models

# int8 weight-only rounds each decoder weight to 1/127 of its row's largest: p_unsafe moves by
# at most 0.0014 on the 21 known examples (measured 2026-12-07, torchao 0.18.0 on a CPU); the
# tolerance leaves room for other kernels and machines while still catching a broken layer.
P_UNSAFE_TOLERANCE = 0.02
EXAMPLES = list(LLAMA_GUARD_EXAMPLES.values())


@pytest.fixture(scope="module")
def int8_guard(tiny_dirs):
    return LlamaGuard.load(tiny_dirs[0], device="cpu", quantize="int8")


def judge(guard):
    return guard.classify_batch([e.conversation() for e in EXAMPLES],
                                excluded_per_item=[e.excluded for e in EXAMPLES])


def test_int8_gives_the_known_answers_within_the_tolerance(int8_guard, llama_guard):
    quantized, plain = judge(int8_guard), judge(llama_guard)
    for example, q, p in zip(EXAMPLES, quantized, plain, strict=True):
        assert q.raw_output.strip() == example.answer, example
        assert abs(q.p_unsafe - p.p_unsafe) <= P_UNSAFE_TOLERANCE, (example, q.p_unsafe, p.p_unsafe)
        assert q.model.endswith(" (int8)") and not p.model.endswith(")")


def test_only_the_decoder_layers_are_quantized(int8_guard):
    from torchao.quantization import Int8Tensor

    model = int8_guard.model
    quantized = {name for name, p in model.named_parameters() if isinstance(p.data, Int8Tensor)}
    linear = {f"{name}.weight" for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear)}
    decoder = {n for n in linear if n.startswith("language_model.model.layers.")}
    assert quantized == decoder  # not the vision tower, its projector, the head or embeddings
    assert int8_guard.name == f"{int8_guard.model.name_or_path} (int8)"
    assert int8_guard.describe().name.endswith(" (int8)")


@pytest.mark.parametrize(("quantize", "words"), [
    ("nf4", ("bitsandbytes", "--quantize int8")),
    ("fp8", ("compute capability 8.9", "--quantize int8")),
    ("int4", ("must be one of none, int8, fp8, nf4",)),
])
def test_what_the_cpu_cannot_run_is_refused_before_loading(quantize, words):
    why = refusal(quantize, torch.device("cpu"))
    assert why is not None and all(w in why for w in words), why
    # Refused before the folder is even read: the message is the refusal, not a load error.
    with pytest.raises(QuantizeRefused) as raised:
        LlamaGuard.load("/nonexistent/folder", device="cpu", quantize=quantize)
    assert str(raised.value) == why + "."
    assert refusal("int8", torch.device("cpu")) is None and refusal("none", "cpu") is None


@pytest.mark.parametrize(("engine", "advice"), [
    ("llama-cpp", "pick a quantized GGUF"), ("openai", "quantize on the server")])
def test_server_engines_refuse_quantize(engine, advice):
    options = loading.EngineOptions(engine=engine, gguf="x.gguf", quantize="int8", openai_env={
        "GUARD_LAB_OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "GUARD_LAB_OPENAI_MODEL": "m"})
    [problem] = options.problems()
    assert problem.startswith(f"--quantize works with --engine transformers only; {engine}")
    assert advice in problem


def run_cli(module, *args, env_extra=None):
    env = {**os.environ, "GUARD_LAB_TINY_DIR": str(tiny_cache_dir()), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_command_lines_refuse_in_one_line(tmp_path, tiny_dirs):
    conversation = tmp_path / "conv.json"
    conversation.write_text(json.dumps([{"role": "user", "content": "hello"}]))
    nf4 = run_cli("guard", "classify", str(conversation), "--tiny", "--quantize", "nf4")
    assert nf4.returncode == 2
    [line] = nf4.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: --quantize nf4 ") and "--quantize int8" in line, nf4.stderr
    bad = run_cli("guard.tune", "check", "--export", "x.jsonl", "--quantize", "int4")
    assert bad.returncode == 2 and "invalid choice: 'int4'" in bad.stderr
    env = run_cli("guard", "classify", str(conversation), "--tiny",
                  env_extra={"GUARD_LAB_QUANTIZE": "int4"})
    assert env.returncode == 2
    assert "--quantize (GUARD_LAB_QUANTIZE) must be one of none, int8, fp8, nf4" in env.stderr


def test_quantization_is_named_in_a_stored_run_and_a_saved_example(tmp_path, int8_guard,
                                                                   tiny_dirs):
    db = tmp_path / "lab.db"
    data = SHARED / "data" / "xstest_prompts.csv"
    for extra in (["--quantize", "int8"], []):  # int8 from the flag; none: a run of its own
        result = run_cli("guard.eval", str(data), "--format", "xstest", "--out", str(db),
                         "--tiny", "--prompt-guard", "none", "--limit", "3", *extra,
                         env_extra={"GUARD_LAB_QUANTIZE": ""})
        assert result.returncode == 0, result.stderr[-2000:]
    with Store(db) as store:
        models = sorted(run.settings.model for run in Runs(store).list())
        assert [m.rsplit("/", 1)[-1] for m in models] == ["llama-guard-4-tiny",
                                                          "llama-guard-4-tiny (int8)"]
        example = LLAMA_GUARD_EXAMPLES["violent"]
        [verdict] = int8_guard.classify_batch([example.conversation()])
        store.save_example(ExampleInput(example.conversation(), "llama-guard-4",
                                        ModelOutput.from_verdict(verdict)),
                           LabelInput("alice", "unsafe", ("S1",)))
        assert store.get_example(1).output.model == int8_guard.name
        assert store.get_example(1).output.model.endswith(" (int8)")


def test_the_bench_prints_its_line_and_the_memory_table(tiny_dirs):
    env = {**os.environ, "GUARD_LAB_TINY_DIR": str(tiny_cache_dir())}
    run = subprocess.run([sys.executable, "bench/bench_quantize.py", "--limit", "10", "--rounds",
                          "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    [ratio] = re.findall(r"^lg4_int8_vs_bf16_p_unsafe: ratio=(\S+)$", out, flags=re.MULTILINE)
    assert math.isfinite(float(ratio)) and float(ratio) > 0
    assert "known examples: verdicts agree 21/21 (same answer text 21)" in out
    assert "XSTest (10 prompts): verdicts agree" in out
    assert re.search(r"counted ([\d,]+) bytes, stored \1 bytes", out)  # the counting holds
    rows = dict(re.findall(r"^  \| (none|int8|fp8|nf4) \| ([\d.]+) GB \|", out, flags=re.MULTILINE))
    assert set(rows) == {"none", "int8", "fp8", "nf4"}
    assert float(rows["nf4"]) < float(rows["int8"]) < 24 * 0.9 < float(rows["none"])
