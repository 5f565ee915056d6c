"""`python -m guard render|classify`: a thin edge over the engine; bad input -> exit 2, one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .categories import Family, parse_codes
from .conversation import load_conversation_file
from .errors import GuardError
from .prompt_guard_text import PREPROCESSING
from .prompts import render
from .versions import check_or_exit

DEFAULT_LLAMA_GUARD = "meta-llama/Llama-Guard-4-12B"


def default_tiny_dir(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """Where the tiny models are cached: GUARD_LAB_TINY_DIR, else ~/.cache/guard-lab/tiny."""
    return Path(environ.get("GUARD_LAB_TINY_DIR") or Path.home() / ".cache" / "guard-lab" / "tiny")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that pick and load the models, shared by `guard classify` and `guard.eval`."""
    parser.add_argument("--tiny", action="store_true", help="use the offline tiny test models")
    parser.add_argument("--prompt-guard", choices=["86m", "22m", "none"], default="86m")
    parser.add_argument("--model", default=os.environ.get("GUARD_LAB_LLAMA_GUARD", DEFAULT_LLAMA_GUARD),
                        help="Llama Guard model id or local folder")
    parser.add_argument("--device", default=os.environ.get("GUARD_LAB_DEVICE", "auto"))
    parser.add_argument("--engine", choices=["transformers", "llama-cpp", "openai"],
                        default=os.environ.get("GUARD_LAB_ENGINE", "transformers"),
                        help="how Llama Guard runs: transformers; llama-cpp (a GGUF file on the "
                             "CPU); openai (an OpenAI-compatible server named by "
                             "GUARD_LAB_OPENAI_BASE_URL, GUARD_LAB_OPENAI_MODEL and "
                             "GUARD_LAB_OPENAI_API_KEY)")
    parser.add_argument("--gguf", default=os.environ.get("GUARD_LAB_GGUF"),
                        help="llama-cpp: a .gguf file or REPO:FILE, e.g. "
                             "'QuantFactory/Llama-Guard-3-1B-GGUF:*Q4_K_M.gguf'")
    parser.add_argument("--family", choices=[f.value for f in Family], default=None,
                        help="prompt format and categories (default: guessed from the model name)")
    parser.add_argument("--threads", type=int, default=None, help="llama-cpp: CPU threads")
    parser.add_argument("--n-ctx", type=int, default=8192, help="llama-cpp: context size in tokens")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m guard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="print the exact prompt string for a conversation file")
    r.add_argument("conversation", type=Path)
    r.add_argument("--exclude", default="", help="comma-separated codes, e.g. S1,S2")
    r.add_argument("--family", default=Family.LLAMA_GUARD_4.value,
                   choices=[f.value for f in Family])
    c = sub.add_parser("classify", help="run Llama Guard and Prompt Guard, print one JSON object")
    c.add_argument("conversation", type=Path)
    c.add_argument("--exclude", default="")
    c.add_argument("--threshold", type=float, default=0.5)
    add_model_arguments(c)
    c.add_argument("--include-assistant", action="store_true",
                   help="also score assistant messages with Prompt Guard")
    c.add_argument("--prompt-guard-preprocessing", choices=PREPROCESSING, default="none",
                   help="how Prompt Guard reads each message: none (as given, the model card's "
                        "recipe) or llamafirewall (spacing tricks such as 'I g n o r e' "
                        "collapsed first, as Meta's LlamaFirewall scanner does)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    check_or_exit(("torch", "transformers"))
    _quiet_transformers()
    try:
        if args.command == "render":
            conversation = load_conversation_file(args.conversation)
            sys.stdout.write(render(conversation, parse_codes(args.exclude), args.family))
            return 0
        if not 0.0 <= args.threshold <= 1.0:
            raise GuardError(f"--threshold must be between 0 and 1, got {args.threshold}.")
        conversation = load_conversation_file(args.conversation)
        guards = load_guards(args)
        from .service import moderate

        result = moderate(guards, conversation, parse_codes(args.exclude),
                          threshold=args.threshold, include_assistant=args.include_assistant,
                          prompt_guard_preprocessing=args.prompt_guard_preprocessing)
    except GuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
    except ImportError:
        pass


def load_guards(args: argparse.Namespace):
    from .service import Guards, tiny_guards

    if args.tiny and args.engine == "transformers":
        guards = tiny_guards(default_tiny_dir())
        if args.prompt_guard == "none":
            guards.prompt_guard = None
        return guards
    from .prompt_guard import PromptGuard

    prompt_guard = None
    if args.prompt_guard != "none":
        if args.tiny:
            from .tiny import build_tiny_models

            prompt_guard = PromptGuard.load(build_tiny_models(default_tiny_dir())[1], device="cpu")
        else:
            prompt_guard = PromptGuard.load(args.prompt_guard, device=args.device)
    return Guards(_load_llama_guard(args), prompt_guard)


def _load_llama_guard(args: argparse.Namespace):
    if args.engine == "llama-cpp":
        from .llama_cpp_engine import LlamaCppGuard

        gguf = args.gguf
        if args.tiny and not gguf:
            from .tiny_text import build_tiny_text_model

            gguf = build_tiny_text_model(default_tiny_dir()).gguf_f32
        if not gguf:
            raise GuardError("--engine llama-cpp needs --gguf: a .gguf file or REPO:FILE, e.g. "
                             "'QuantFactory/Llama-Guard-3-1B-GGUF:*Q4_K_M.gguf'.")
        return LlamaCppGuard.load(gguf, family=args.family, n_ctx=args.n_ctx,
                                  n_threads=args.threads)
    if args.engine == "openai":
        from .openai_engine import OpenAIGuard

        return OpenAIGuard.from_env(os.environ, family=args.family)
    from .llama_guard import LlamaGuard

    return LlamaGuard.load(args.model, device=args.device, family=args.family)
