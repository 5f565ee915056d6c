"""Which engines to load and how: one set of options for the app, `guard classify` and `guard.eval`.

Flags win over environment variables, which win over defaults. `EngineOptions.problems()` says
what is wrong with a combination (llama-cpp without a GGUF file, an adapter on a server engine)
in words the person can act on; each edge turns those into its own exit or message.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guard.core.categories import Family, parse_codes
from guard.core.errors import GuardError, ModelLoadError
from guard.core.policy import Policy, ad_hoc, read_policy_file
from guard.core.verdict import DEFAULT_THRESHOLD
from guard.engines.http_client import DEFAULT_IN_FLIGHT, MAX_IN_FLIGHT
from guard.engines.quantize import QUANTIZE

DEFAULT_LLAMA_GUARD = "meta-llama/Llama-Guard-4-12B"
DEFAULT_PROMPT_GUARD = "86m"
DEFAULT_N_CTX = 8192
ENGINES = ("transformers", "llama-cpp", "openai")
# What the openai engine reads (guard.engines.openai_engine.OpenAIGuard.from_env); kept in the options so
# loading never looks at os.environ itself.
OPENAI_ENV = ("GUARD_LAB_OPENAI_BASE_URL", "GUARD_LAB_OPENAI_MODEL", "GUARD_LAB_OPENAI_API_KEY")
GGUF_EXAMPLE = "QuantFactory/Llama-Guard-3-1B-GGUF:*Q4_K_M.gguf"
ENV_OPENAI_CONCURRENCY = "GUARD_LAB_OPENAI_CONCURRENCY"


def default_tiny_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the tiny models are cached: GUARD_LAB_TINY_DIR, else ~/.cache/guard-lab/tiny."""
    return Path(environ.get("GUARD_LAB_TINY_DIR") or Path.home() / ".cache" / "guard-lab" / "tiny")


@dataclass(frozen=True)
class EngineOptions:
    """The models a process loads."""

    tiny: bool = False
    tiny_dir: Path | None = None  # set when tiny
    llama_guard: str = DEFAULT_LLAMA_GUARD  # transformers: a model id or a local folder
    prompt_guard: str = DEFAULT_PROMPT_GUARD  # "86m", "22m", a model id or folder, or "none"
    # With a tuned folder in prompt_guard (python -m guard.tune prompt-guard): the base it goes
    # on; None: the recorded base (the tiny Prompt Guard with tiny).
    prompt_guard_base: str | None = None
    device: str = "auto"
    engine: str = "transformers"  # one of ENGINES
    gguf: str | None = None  # llama-cpp: a .gguf file or REPO:FILE (None with tiny: the stand-in)
    family: Family | None = None  # None: guessed from the model name
    threads: int | None = None  # llama-cpp: CPU threads; None lets llama.cpp choose
    n_ctx: int = DEFAULT_N_CTX  # llama-cpp: context size in tokens
    adapter: Path | None = None  # transformers: a LoRA adapter folder from `python -m guard.tune`
    openai_env: dict[str, str] = field(default_factory=dict, repr=False)  # holds the API key
    openai_concurrency: int = DEFAULT_IN_FLIGHT  # openai: requests in flight at most
    quantize: str = "none"  # transformers: one of QUANTIZE (guard.engines.quantize)

    def problems(self) -> list[str]:
        """What makes this combination unloadable, each with what to do; [] when none."""
        found = []
        if self.engine not in ENGINES:
            found.append(f"GUARD_LAB_ENGINE must be one of {', '.join(ENGINES)}, "
                         f"got {self.engine!r}")
        if self.engine == "llama-cpp" and not (self.gguf or self.tiny):
            found.append(f"--engine llama-cpp needs --gguf (or GUARD_LAB_GGUF): a .gguf file or "
                         f"REPO:FILE, e.g. '{GGUF_EXAMPLE}'")
        if self.engine == "openai" and not {OPENAI_ENV[0], OPENAI_ENV[1]} <= set(self.openai_env):
            found.append(f"--engine openai needs {OPENAI_ENV[0]} (e.g. http://127.0.0.1:8000/v1) "
                         f"and {OPENAI_ENV[1]} (e.g. meta-llama/Llama-Guard-4-12B) set")
        if self.adapter is not None and self.engine != "transformers":
            found.append(f"--adapter works with --engine transformers only (PEFT applies it to "
                         f"the checkpoint); {self.engine} serves the weights it was given: merge "
                         "the adapter into the model and serve that instead")
        if self.quantize not in QUANTIZE:
            found.append(f"--quantize (GUARD_LAB_QUANTIZE) must be one of {', '.join(QUANTIZE)}, "
                         f"got {self.quantize!r}")
        elif self.quantize != "none" and self.engine != "transformers":
            found.append(f"--quantize works with --engine transformers only; {self.engine} "
                         "serves the weights it was given: "
                         + ("pick a quantized GGUF (Q8_0, Q4_K_M) for --gguf"
                            if self.engine == "llama-cpp" else
                            "quantize on the server (e.g. vLLM's --quantization fp8)")
                         + ", and leave --quantize out")
        if self.threads is not None and self.threads < 1:
            found.append("--threads must be 1 or more")
        if self.n_ctx < 512:
            found.append(f"--n-ctx must be at least 512 tokens, got {self.n_ctx}")
        if self.engine == "openai" and not 1 <= self.openai_concurrency <= MAX_IN_FLIGHT:
            found.append(f"--concurrency ({ENV_OPENAI_CONCURRENCY}) must be 1 to {MAX_IN_FLIGHT} "
                         f"requests in flight, got {self.openai_concurrency}")
        return found


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.strip() else None


def truthy(value: str | None) -> bool:
    """How a GUARD_LAB_* switch reads: 1, true, yes or on (any case) is on."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def add_engine_arguments(p: argparse.ArgumentParser, environ: Mapping[str, str] = os.environ
                         ) -> None:
    """The flags that pick the models (each with its GUARD_LAB_* environment variable)."""
    p.add_argument("--tiny", action="store_true", default=truthy(environ.get("GUARD_LAB_TINY")),
                   help="run the tiny offline test models (env GUARD_LAB_TINY=1)")
    p.add_argument("--llama-guard", "--model", dest="llama_guard",
                   default=environ.get("GUARD_LAB_LLAMA_GUARD", DEFAULT_LLAMA_GUARD),
                   help="Llama Guard model id or local folder (env GUARD_LAB_LLAMA_GUARD)")
    p.add_argument("--engine", choices=ENGINES,
                   default=environ.get("GUARD_LAB_ENGINE", "transformers"),
                   help="how Llama Guard runs: transformers; llama-cpp (a GGUF file on the CPU, "
                        "text only); openai (an OpenAI-compatible server named by "
                        "GUARD_LAB_OPENAI_BASE_URL, GUARD_LAB_OPENAI_MODEL and "
                        "GUARD_LAB_OPENAI_API_KEY) (env GUARD_LAB_ENGINE)")
    p.add_argument("--gguf", default=environ.get("GUARD_LAB_GGUF"),
                   help=f"llama-cpp: a .gguf file or REPO:FILE, e.g. '{GGUF_EXAMPLE}' "
                        "(env GUARD_LAB_GGUF; with --tiny: the tiny Llama Guard 3 stand-in)")
    p.add_argument("--adapter", default=environ.get("GUARD_LAB_ADAPTER") or None, metavar="DIR",
                   help="transformers: a LoRA adapter folder made by python -m guard.tune, "
                        "checked against the loaded model (env GUARD_LAB_ADAPTER)")
    p.add_argument("--family", choices=[f.value for f in Family],
                   default=environ.get("GUARD_LAB_FAMILY") or None,
                   help="prompt format and categories (env GUARD_LAB_FAMILY; default: guessed "
                        "from the model name)")
    p.add_argument("--threads", type=int, default=_int_or_none(environ.get("GUARD_LAB_THREADS")),
                   help="llama-cpp: CPU threads (env GUARD_LAB_THREADS; default: llama.cpp's)")
    p.add_argument("--n-ctx", type=int,
                   default=int(environ.get("GUARD_LAB_N_CTX") or DEFAULT_N_CTX),
                   help="llama-cpp: context size in tokens (env GUARD_LAB_N_CTX)")
    p.add_argument("--prompt-guard",
                   default=environ.get("GUARD_LAB_PROMPT_GUARD", DEFAULT_PROMPT_GUARD),
                   help="86m, 22m, a model id or folder, a folder tuned by python -m guard.tune "
                        "prompt-guard, or none (env GUARD_LAB_PROMPT_GUARD)")
    p.add_argument("--prompt-guard-base", metavar="MODEL",
                   default=environ.get("GUARD_LAB_PROMPT_GUARD_BASE") or None,
                   help="with a tuned --prompt-guard folder: the base it was tuned on (86m, 22m, "
                        "a model id or folder; default: the base its record names, the tiny one "
                        "with --tiny); another base is refused (env GUARD_LAB_PROMPT_GUARD_BASE)")
    p.add_argument("--device", default=environ.get("GUARD_LAB_DEVICE", "auto"),
                   help="auto, cuda, cuda:1, cpu (env GUARD_LAB_DEVICE)")
    p.add_argument("--quantize", choices=QUANTIZE,
                   default=(environ.get("GUARD_LAB_QUANTIZE") or "none").strip().lower(),
                   help="transformers: quantize Llama Guard's decoder as it loads: int8 "
                        "(torchao, CUDA or CPU; Llama Guard 4 on a 24 GB card), fp8 (GPUs with "
                        "compute capability 8.9+), nf4 (bitsandbytes, CUDA); the model's name "
                        "then says it, e.g. '... (int8)' (env GUARD_LAB_QUANTIZE)")


def engine_options(args: argparse.Namespace, environ: Mapping[str, str] = os.environ
                   ) -> EngineOptions:
    """The options `add_engine_arguments` parsed (check `.problems()` before loading)."""
    families = [f.value for f in Family]
    concurrency = getattr(args, "openai_concurrency", None)  # guard.eval's --concurrency
    if concurrency is not None and args.engine != "openai":
        raise GuardError(f"--concurrency sets the requests in flight of --engine openai; "
                         f"{args.engine} runs the model in this process, one batch at a time. "
                         "Leave --concurrency out, or tune --batch-size instead.")
    if concurrency is None:
        try:
            concurrency = int(environ.get(ENV_OPENAI_CONCURRENCY) or DEFAULT_IN_FLIGHT)
        except ValueError:
            raise GuardError(f"{ENV_OPENAI_CONCURRENCY} must be a whole number of requests in "
                             f"flight (1 to {MAX_IN_FLIGHT}), got "
                             f"{environ[ENV_OPENAI_CONCURRENCY]!r}") from None
    if args.family is not None and args.family not in families:
        # argparse checks `choices` on the command line only, not on environment defaults.
        raise GuardError(f"GUARD_LAB_FAMILY must be one of {', '.join(families)}, "
                         f"got {args.family!r}")
    return EngineOptions(
        tiny=args.tiny, tiny_dir=default_tiny_dir(environ) if args.tiny else None,
        llama_guard=args.llama_guard, prompt_guard=args.prompt_guard, device=args.device,
        prompt_guard_base=getattr(args, "prompt_guard_base", None),
        engine=args.engine, gguf=args.gguf, family=Family(args.family) if args.family else None,
        threads=args.threads, n_ctx=args.n_ctx,
        adapter=Path(args.adapter) if args.adapter else None,
        openai_env={k: environ[k] for k in OPENAI_ENV if environ.get(k)},
        openai_concurrency=concurrency, quantize=getattr(args, "quantize", "none"))


def policy_of_flags(policy_file: str | Path | None, *, exclude: str | None = None,
                    threshold: float | None = None, preprocessing: str | None = None,
                    family: Family | None = None) -> Policy:
    """The policy a command enforces: `--policy FILE`, or the loose flags as an unnamed one.

    A policy decides the categories, the threshold and Prompt Guard's reading, so those flags
    are refused beside it rather than silently winning or losing.
    """
    if policy_file is None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise GuardError(f"--threshold must be between 0 and 1, got {threshold}.")
        return ad_hoc(parse_codes(exclude or ""),
                      DEFAULT_THRESHOLD if threshold is None else threshold,
                      family or Family.LLAMA_GUARD_4, preprocessing=preprocessing or "none")
    given = [flag for flag, value in (("--exclude", exclude), ("--threshold", threshold),
                                      ("--prompt-guard-preprocessing", preprocessing))
             if value is not None]
    if given:
        raise GuardError(f"{', '.join(given)} cannot go with --policy: the policy sets them. "
                         "Leave them out, or save a policy that says what you want.")
    path = Path(policy_file)
    if not path.is_file() and not str(policy_file).endswith(".json"):
        raise GuardError(
            f"--policy {policy_file}: no such file. This command reads policy files; for a "
            f"policy saved in a labels database, export it first: python -m labels policy "
            f"export {policy_file} --db DB > {path.name}.json")
    return read_policy_file(path)


def with_policy(options: EngineOptions, policy: Policy) -> EngineOptions:
    """The options with the policy's Prompt Guard model (`none`: Prompt Guard is not loaded)."""
    if policy.ad_hoc:
        return options
    return replace(options, prompt_guard=policy.prompt_guard.model)


def check_policy(guards: Any, policy: Policy) -> None:
    """Refuse a policy written for another family than the loaded Llama Guard's."""
    if not policy.ad_hoc and guards.llama_guard is not None:
        policy.check_family(guards.llama_guard.family)


def load_llama_guard(options: EngineOptions) -> Any:
    """The Llama Guard engine the options name, with its adapter when one is given."""
    problems = options.problems()
    if problems:
        raise GuardError(problems[0] + ".")
    if options.engine == "llama-cpp":
        from guard.engines.llama_cpp_engine import LlamaCppGuard

        gguf = options.gguf
        if options.tiny and not gguf:
            from guard.testing.tiny_text import build_tiny_text_model

            gguf = str(build_tiny_text_model(options.tiny_dir).gguf_f32)
        return LlamaCppGuard.load(gguf, family=options.family, n_ctx=options.n_ctx,
                                  n_threads=options.threads)
    if options.engine == "openai":
        from guard.engines.openai_engine import OpenAIGuard

        return OpenAIGuard.from_env(options.openai_env, family=options.family,
                                    concurrency=options.openai_concurrency)
    from guard.engines.llama_guard import LlamaGuard

    if options.tiny:
        from guard.testing.tiny import build_tiny_models

        guard = LlamaGuard.load(build_tiny_models(options.tiny_dir)[0], device="cpu",
                                family=options.family, quantize=options.quantize)
    else:
        guard = LlamaGuard.load(options.llama_guard, device=options.device, family=options.family,
                                quantize=options.quantize)
    if options.adapter is not None:
        from guard.engines.adapter import load_adapter

        guard = load_adapter(guard, options.adapter)
    return guard


def load_prompt_guard(options: EngineOptions, source: str | None = None) -> Any:
    """Prompt Guard from `source` (default: the options' choice); None when that is "none"."""
    from guard.engines.prompt_guard import PromptGuard
    from guard.engines.tuned_prompt_guard import is_tuned_folder, load_tuned

    source = source or options.prompt_guard
    if source.lower() == "none":
        return None
    if is_tuned_folder(source):
        base = options.prompt_guard_base
        if base is None and options.tiny:
            from guard.testing.tiny import build_tiny_models

            base = str(build_tiny_models(options.tiny_dir)[1])
        return load_tuned(source, base=base, device="cpu" if options.tiny else options.device)
    if options.prompt_guard_base is not None and source == options.prompt_guard:
        raise ModelLoadError(f"--prompt-guard-base goes with a tuned folder in --prompt-guard (made by "
                         f"python -m guard.tune prompt-guard); {source} is not one. Leave "
                         "--prompt-guard-base out, or give the tuned folder.")
    if options.tiny:
        from guard.testing.tiny import build_tiny_models

        return PromptGuard.load(build_tiny_models(options.tiny_dir)[1], device="cpu")
    return PromptGuard.load(source, device=options.device)


def load_guards(options: EngineOptions) -> Any:
    """Both guards, as `guard classify` and `guard.eval` use them (a failure raises)."""
    from guard.engines.service import Guards

    return Guards(load_llama_guard(options), load_prompt_guard(options))
