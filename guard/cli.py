"""`python -m guard render|classify`: a thin edge over the engine; bad input -> exit 2, one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from guard.cli_edge import run_command
from guard.core.categories import Family, parse_codes
from guard.core.conversation import load_conversation_file
from guard.core.prompt_guard_text import PREPROCESSING
from guard.core.prompts import render
from guard.engines import loading
from guard.versions import check_or_exit


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that pick and load the models, shared by `guard classify` and `guard.eval`."""
    loading.add_engine_arguments(parser, os.environ)


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
    c.add_argument("--exclude", default=None)
    c.add_argument("--threshold", type=float, default=None, help="flag p_unsafe >= this (0.5)")
    c.add_argument("--policy", metavar="FILE",
                   help="a policy JSON file (python -m labels policy export NAME > FILE): its "
                        "categories, threshold and Prompt Guard settings, and its decision")
    add_model_arguments(c)
    c.add_argument("--include-assistant", action="store_true",
                   help="also score assistant messages with Prompt Guard")
    c.add_argument("--prompt-guard-preprocessing", choices=PREPROCESSING, default=None,
                   help="how Prompt Guard reads each message: none (as given, the model card's "
                        "recipe) or llamafirewall (spacing tricks such as 'I g n o r e' "
                        "collapsed first, as Meta's LlamaFirewall scanner does)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    check_or_exit(("torch", "transformers"))
    _quiet_transformers()
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "render":
        conversation = load_conversation_file(args.conversation)
        sys.stdout.write(render(conversation, parse_codes(args.exclude), args.family))
        return 0
    policy = loading.policy_of_flags(args.policy, exclude=args.exclude,
                                     threshold=args.threshold,
                                     preprocessing=args.prompt_guard_preprocessing)
    conversation = load_conversation_file(args.conversation)
    options = loading.engine_options(args, os.environ)
    guards = loading.load_guards(loading.with_policy(options, policy))
    loading.check_policy(guards, policy)
    from guard.engines.service import moderate

    moderation = moderate(guards, conversation, policy.excluded, threshold=policy.threshold,
                          custom=policy.custom, include_assistant=args.include_assistant,
                          prompt_guard_preprocessing=policy.prompt_guard.preprocessing)
    print(json.dumps(policy.apply(moderation.to_json()), indent=2))
    return 0


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
    except ImportError:
        pass


def load_guards(args: argparse.Namespace):
    """The guards the parsed engine arguments name (an unloadable combination raises)."""
    return loading.load_guards(loading.engine_options(args, os.environ))
