"""The app's options: command-line flags over environment variables over defaults."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from guard.categories import Family
from guard.conversation import MAX_IMAGES
from guard.prompt_guard_text import PREPROCESSING
from guard.verdict import DEFAULT_THRESHOLD

DEFAULT_LLAMA_GUARD = "meta-llama/Llama-Guard-4-12B"
DEFAULT_PROMPT_GUARD = "86m"
DEFAULT_PORT = 7860
DEFAULT_N_CTX = 8192
ENGINES = ("transformers", "llama-cpp", "openai")
# What the openai engine reads (guard.openai_engine.OpenAIGuard.from_env); kept in Options so
# loading never looks at os.environ itself.
OPENAI_ENV = ("GUARD_LAB_OPENAI_BASE_URL", "GUARD_LAB_OPENAI_MODEL", "GUARD_LAB_OPENAI_API_KEY")
GGUF_EXAMPLE = "QuantFactory/Llama-Guard-3-1B-GGUF:*Q4_K_M.gguf"


@dataclass(frozen=True)
class Serving:
    """What one visitor may take of a public server (README, Limits)."""

    queue_size: int = 32  # model runs waiting at once, all visitors (GUARD_LAB_QUEUE_SIZE)
    per_visitor: int = 2  # a visitor's model runs waiting or running (GUARD_LAB_PER_VISITOR)
    trust_proxy: bool = False  # the visitor is X-Forwarded-For's first address (on Spaces)
    state_ttl_s: int = 7200  # a session's conversation is dropped this long after its last
    #                          change, and uploads this long after they came (GUARD_LAB_STATE_TTL)
    max_file_size: str = "50mb"  # any one upload (GUARD_LAB_MAX_FILE_SIZE)


@dataclass(frozen=True)
class Options:
    tiny: bool
    tiny_dir: Path | None
    llama_guard: str
    prompt_guard: str  # "86m", "22m", a hub id, a local folder, or "none"
    device: str
    host: str
    port: int
    threshold: float
    max_images: int
    db: Path | None  # the labels database; None: labels off
    concurrency: int
    data_dir: Path | None = None  # the public evaluation sets; None: the default place
    engine: str = "transformers"  # one of ENGINES
    gguf: str | None = None  # llama-cpp: a .gguf file or REPO:FILE (None with --tiny: the stand-in)
    family: Family | None = None  # None: guessed from the model name
    threads: int | None = None  # llama-cpp: CPU threads; None lets llama.cpp choose
    n_ctx: int = DEFAULT_N_CTX  # llama-cpp: context size in tokens
    openai_env: dict[str, str] = field(default_factory=dict, repr=False)  # holds the API key
    reviewers: dict[str, str] = field(default_factory=dict, repr=False)  # name -> password
    on_space: bool = False  # Hugging Face Spaces: reviewers sign in with their HF account
    serving: Serving = field(default_factory=Serving)
    prompt_guard_preprocessing: str = "none"  # one of guard.prompt_guard_text.PREPROCESSING
    api_key: str | None = field(default=None, repr=False)  # /v1/moderations (GUARD_LAB_API_KEY)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.strip() else None


def _hf_login(environ: Mapping[str, str]) -> bool:
    """On a Space with `hf_oauth: true` in its README metadata (Spaces then set OAUTH_CLIENT_ID)."""
    return bool(environ.get("SPACE_ID") and environ.get("OAUTH_CLIENT_ID"))


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    on_space = bool(environ.get("SPACE_ID"))
    p = argparse.ArgumentParser(
        prog="python app.py", description="Guard Lab: Llama Guard and Prompt Guard 2 in a browser.")
    p.add_argument("--tiny", action="store_true", default=_truthy(environ.get("GUARD_LAB_TINY")),
                   help="run the tiny offline test models (env GUARD_LAB_TINY=1)")
    p.add_argument("--llama-guard", default=environ.get("GUARD_LAB_LLAMA_GUARD", DEFAULT_LLAMA_GUARD),
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
                   help="86m, 22m, a model id or folder, or none (env GUARD_LAB_PROMPT_GUARD)")
    p.add_argument("--prompt-guard-preprocessing", choices=PREPROCESSING,
                   default=environ.get("GUARD_LAB_PROMPT_GUARD_PREPROCESSING") or "none",
                   help="how Prompt Guard reads messages unless a visitor changes it: none (the "
                        "model card's recipe) or llamafirewall (spacing tricks collapsed first, "
                        "as Meta's scanner does) (env GUARD_LAB_PROMPT_GUARD_PREPROCESSING)")
    p.add_argument("--device", default=environ.get("GUARD_LAB_DEVICE", "auto"),
                   help="auto, cuda, cuda:1, cpu (env GUARD_LAB_DEVICE)")
    p.add_argument("--host", default=environ.get("GUARD_LAB_HOST",
                                                 "0.0.0.0" if on_space else "127.0.0.1"),
                   help="address to listen on (env GUARD_LAB_HOST; 0.0.0.0 on Spaces)")
    p.add_argument("--port", type=int, default=int(environ.get("GUARD_LAB_PORT", DEFAULT_PORT)),
                   help="port (env GUARD_LAB_PORT)")
    p.add_argument("--threshold", type=float,
                   default=float(environ.get("GUARD_LAB_THRESHOLD", DEFAULT_THRESHOLD)),
                   help="default p_unsafe threshold (env GUARD_LAB_THRESHOLD)")
    p.add_argument("--max-images", type=int,
                   default=int(environ.get("GUARD_LAB_MAX_IMAGES", MAX_IMAGES)),
                   help=f"images per conversation, 1 to {MAX_IMAGES} (env GUARD_LAB_MAX_IMAGES)")
    p.add_argument("--db", default=environ.get("GUARD_LAB_DB"),
                   help="labels database file (env GUARD_LAB_DB; default /data/guard_lab.db on "
                        "Spaces with persistent storage, else data/guard_lab.db)")
    p.add_argument("--no-labels", action="store_true",
                   default=_truthy(environ.get("GUARD_LAB_NO_LABELS")),
                   help="hide the labelling panels (env GUARD_LAB_NO_LABELS=1)")
    p.add_argument("--concurrency", type=int,
                   default=int(environ.get("GUARD_LAB_CONCURRENCY", 1)),
                   help="model runs at the same time (env GUARD_LAB_CONCURRENCY; 1 fits one GPU)")
    p.add_argument("--queue-size", type=int,
                   default=int(environ.get("GUARD_LAB_QUEUE_SIZE", Serving.queue_size)),
                   help="model runs that may wait at once, all visitors together; more are "
                        "refused with 'busy' (env GUARD_LAB_QUEUE_SIZE)")
    p.add_argument("--per-visitor", type=int,
                   default=int(environ.get("GUARD_LAB_PER_VISITOR", Serving.per_visitor)),
                   help="model runs one visitor may have waiting or running (env "
                        "GUARD_LAB_PER_VISITOR)")
    p.add_argument("--data-dir", default=environ.get("GUARD_LAB_DATA_DIR"),
                   help="folder with the public evaluation sets (env GUARD_LAB_DATA_DIR; "
                        "default ../shared/data beside the repository)")
    p.add_argument("--reviewers", default=environ.get("GUARD_LAB_REVIEWERS", ""),
                   help="reviewer accounts 'alice:secret,bob:secret2': only they can label, "
                        "browse, export and measure; everyone can still run the models. On "
                        "Spaces, names only: the Hugging Face users who may review (env "
                        "GUARD_LAB_REVIEWERS; default: everyone is a reviewer)")
    return p


def parse_options(argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] = os.environ) -> Options:
    p = parser(environ)
    args = p.parse_args(argv)
    on_space = bool(environ.get("SPACE_ID"))
    if not 0.0 <= args.threshold <= 1.0:
        p.error(f"--threshold / GUARD_LAB_THRESHOLD must be between 0 and 1, got {args.threshold}")
    if not 1 <= args.max_images <= MAX_IMAGES:
        p.error(f"--max-images / GUARD_LAB_MAX_IMAGES must be 1 to {MAX_IMAGES} (the model card "
                f"tests up to {MAX_IMAGES} images), got {args.max_images}")
    if args.concurrency < 1:
        p.error("--concurrency must be 1 or more")
    if args.queue_size < 1 or args.per_visitor < 1:
        p.error("--queue-size and --per-visitor (GUARD_LAB_QUEUE_SIZE, GUARD_LAB_PER_VISITOR) "
                "must be 1 or more")
    try:
        state_ttl = int(environ.get("GUARD_LAB_STATE_TTL", Serving.state_ttl_s))
    except ValueError:
        p.error("GUARD_LAB_STATE_TTL must be a whole number of seconds, e.g. 7200")
    if state_ttl < 60:
        p.error(f"GUARD_LAB_STATE_TTL must be at least 60 seconds, got {state_ttl}")
    max_file_size = environ.get("GUARD_LAB_MAX_FILE_SIZE", Serving.max_file_size).strip().lower()
    if not re.fullmatch(r"\d+(b|kb|mb|gb)", max_file_size):
        p.error(f"GUARD_LAB_MAX_FILE_SIZE must look like 50mb or 800kb, got {max_file_size!r}")
    proxy = environ.get("GUARD_LAB_TRUST_PROXY")
    serving = Serving(queue_size=args.queue_size, per_visitor=args.per_visitor,
                      trust_proxy=_truthy(proxy) if proxy is not None else on_space,
                      state_ttl_s=state_ttl, max_file_size=max_file_size)
    # argparse checks `choices` on the command line only, not on defaults from the environment.
    if args.engine not in ENGINES:
        p.error(f"GUARD_LAB_ENGINE must be one of {', '.join(ENGINES)}, got {args.engine!r}")
    families = [f.value for f in Family]
    if args.family is not None and args.family not in families:
        p.error(f"GUARD_LAB_FAMILY must be one of {', '.join(families)}, got {args.family!r}")
    if args.prompt_guard_preprocessing not in PREPROCESSING:
        p.error(f"GUARD_LAB_PROMPT_GUARD_PREPROCESSING must be one of {', '.join(PREPROCESSING)}, "
                f"got {args.prompt_guard_preprocessing!r}")
    if args.engine == "llama-cpp" and not (args.gguf or args.tiny):
        p.error(f"--engine llama-cpp needs --gguf (or GUARD_LAB_GGUF): a .gguf file or REPO:FILE, "
                f"e.g. '{GGUF_EXAMPLE}'")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be 1 or more")
    if args.n_ctx < 512:
        p.error(f"--n-ctx must be at least 512 tokens, got {args.n_ctx}")
    openai_env = {k: environ[k] for k in OPENAI_ENV if environ.get(k)}
    if args.engine == "openai" and not {OPENAI_ENV[0], OPENAI_ENV[1]} <= set(openai_env):
        p.error(f"--engine openai needs {OPENAI_ENV[0]} (e.g. http://127.0.0.1:8000/v1) and "
                f"{OPENAI_ENV[1]} (e.g. meta-llama/Llama-Guard-4-12B) set")
    from guard_app.reviewers import ReviewerGate, parse_accounts

    try:
        reviewers = parse_accounts(args.reviewers)
        ReviewerGate.from_config(reviewers, on_space=_hf_login(environ), environ=environ)
    except ValueError as exc:
        p.error(str(exc))
    db = None
    if not args.no_labels:
        if args.db:
            db = Path(args.db)
        else:
            from labels.store import default_db_path

            db = default_db_path(environ)
    tiny_dir = None
    if args.tiny:
        from guard.cli import default_tiny_dir

        tiny_dir = default_tiny_dir(environ)
    return Options(tiny=args.tiny, tiny_dir=tiny_dir, llama_guard=args.llama_guard,
                   prompt_guard=args.prompt_guard, device=args.device, host=args.host,
                   port=args.port, threshold=args.threshold, max_images=args.max_images, db=db,
                   concurrency=args.concurrency,
                   data_dir=Path(args.data_dir) if args.data_dir else None,
                   engine=args.engine, gguf=args.gguf,
                   family=Family(args.family) if args.family else None, threads=args.threads,
                   n_ctx=args.n_ctx, openai_env=openai_env, reviewers=reviewers,
                   on_space=_hf_login(environ), serving=serving,
                   prompt_guard_preprocessing=args.prompt_guard_preprocessing,
                   api_key=(environ.get("GUARD_LAB_API_KEY") or "").strip() or None)
