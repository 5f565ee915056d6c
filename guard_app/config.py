"""The app's options: command-line flags over environment variables over defaults."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from guard.core.conversation import MAX_IMAGES
from guard.core.errors import GuardError
from guard.core.prompt_guard_text import PREPROCESSING
from guard.core.verdict import DEFAULT_THRESHOLD
from guard.engines.loading import (
    ENV_OPENAI_CONCURRENCY,
    EngineOptions,
    add_engine_arguments,
    engine_options,
    truthy,
)

DEFAULT_PORT = 7860


@dataclass(frozen=True)
class Serving:
    """What one visitor may take of a public server (README, Limits)."""

    queue_size: int = 32  # model runs waiting at once, all visitors (GUARD_LAB_QUEUE_SIZE)
    per_visitor: int = 2  # a visitor's model runs waiting or running (GUARD_LAB_PER_VISITOR)
    trust_proxy: bool = False  # visitors are told apart by X-Forwarded-For (on Spaces)
    proxy_hops: int = 1  # trusted proxies in front: the visitor is the address the outermost
    #                      appended, this many from the right (GUARD_LAB_PROXY_HOPS)
    state_ttl_s: int = 7200  # a session's conversation is dropped this long after its last
    #                          change, and uploads this long after they came (GUARD_LAB_STATE_TTL)
    max_file_size: str | None = None  # any one upload (GUARD_LAB_MAX_FILE_SIZE); None: the
    #                                   largest file the app reads (guard_app.uploads)
    upload_quota: str = "200mb"  # one visitor's uploads kept at once (GUARD_LAB_UPLOAD_QUOTA)
    upload_ttl_s: int = 600  # an upload no session holds is deleted after (GUARD_LAB_UPLOAD_TTL)
    sessions_per_visitor: int = 50  # live page sessions (GUARD_LAB_SESSIONS_PER_VISITOR)
    decode_concurrency: int = 2  # image decodes at once outside a model run
    #                              (GUARD_LAB_DECODE_CONCURRENCY)

    @property
    def hops(self) -> int:
        """Trusted proxies in front of the app (0: none), for guard_app.fair.visitor."""
        return self.proxy_hops if self.trust_proxy else 0


@dataclass(frozen=True)
class Options:
    engines: EngineOptions  # which models to load, and how
    host: str
    port: int
    threshold: float
    max_images: int
    db: Path | None  # the labels database; None: labels off
    concurrency: int
    data_dir: Path | None = None  # the public evaluation sets; None: the default place
    reviewers: dict[str, str] = field(default_factory=dict, repr=False)  # name -> password
    on_space: bool = False  # Hugging Face Spaces: reviewers sign in with their HF account
    serving: Serving = field(default_factory=Serving)
    reviewers_off: str = ""  # why reviewing is off (a public Space without sign-in), and how on
    leads: str = ""  # reviewers who adjudicate: 'carol,dave' (--leads, GUARD_LAB_LEADS)
    prompt_guard_preprocessing: str = "none"  # one of guard.core.prompt_guard_text.PREPROCESSING
    api_key: str | None = field(default=None, repr=False)  # /v1/moderations (GUARD_LAB_API_KEY)
    policy: str | None = None  # the default policy: a saved name (NAME[@N]) or a file
    neutralise_markers: bool = False  # rewrite template markers in messages (README, Fidelity)

    @property
    def tiny(self) -> bool:
        return self.engines.tiny


def _hf_login(environ: Mapping[str, str]) -> bool:
    """On a Space with `hf_oauth: true` in its README metadata (Spaces then set OAUTH_CLIENT_ID)."""
    return bool(environ.get("SPACE_ID") and environ.get("OAUTH_CLIENT_ID"))


def public_space_without_sign_in(environ: Mapping[str, str], accounts: Mapping[str, str]) -> str:
    """Why reviewing is off, and how to turn it on, on a Space with neither Hugging Face sign-in
    nor reviewer passwords (there every visitor would be a reviewer); '' elsewhere."""
    if not environ.get("SPACE_ID") or _hf_login(environ) or any(accounts.values()):
        return ""
    return ("Reviewing is off on this public Space: it has no reviewer sign-in, so labels, "
            "review queues, batch evaluation and tuning would be open to every visitor. To "
            "turn them on, add hf_oauth: true to the Space's README metadata (reviewers sign "
            "in with Hugging Face; GUARD_LAB_REVIEWERS=alice,bob names who may), or set the "
            "secret GUARD_LAB_REVIEWERS='alice:password,bob:password' (reviewer accounts). "
            "Anyone can still run the models.")


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    on_space = bool(environ.get("SPACE_ID"))
    p = argparse.ArgumentParser(
        prog="python app.py", description="Guard Lab: Llama Guard and Prompt Guard 2 in a browser.")
    add_engine_arguments(p, environ)
    p.add_argument("--prompt-guard-preprocessing", choices=PREPROCESSING,
                   default=environ.get("GUARD_LAB_PROMPT_GUARD_PREPROCESSING") or "none",
                   help="how Prompt Guard reads messages unless a visitor changes it: none (the "
                        "model card's recipe) or llamafirewall (spacing tricks collapsed first, "
                        "as Meta's scanner does) (env GUARD_LAB_PROMPT_GUARD_PREPROCESSING)")
    p.add_argument("--host", default=environ.get("GUARD_LAB_HOST",
                                                 "0.0.0.0" if on_space else "127.0.0.1"),
                   help="address to listen on (env GUARD_LAB_HOST; 0.0.0.0 on Spaces)")
    p.add_argument("--port", type=int, default=int(environ.get("GUARD_LAB_PORT", DEFAULT_PORT)),
                   help="port (env GUARD_LAB_PORT)")
    p.add_argument("--threshold", type=float,
                   default=float(environ.get("GUARD_LAB_THRESHOLD", DEFAULT_THRESHOLD)),
                   help="default p_unsafe threshold (env GUARD_LAB_THRESHOLD)")
    p.add_argument("--policy", metavar="NAME|FILE", default=environ.get("GUARD_LAB_POLICY") or None,
                   help="the default policy of every screen and API: a policy saved in the "
                        "labels database (NAME or NAME@VERSION) or a JSON file (env "
                        "GUARD_LAB_POLICY)")
    p.add_argument("--max-images", type=int,
                   default=int(environ.get("GUARD_LAB_MAX_IMAGES", MAX_IMAGES)),
                   help=f"images per conversation, 1 to {MAX_IMAGES} (env GUARD_LAB_MAX_IMAGES)")
    p.add_argument("--db", default=environ.get("GUARD_LAB_DB"),
                   help="labels database file (env GUARD_LAB_DB; default /data/guard_lab.db on "
                        "Spaces with persistent storage, else data/guard_lab.db)")
    p.add_argument("--no-labels", action="store_true",
                   default=truthy(environ.get("GUARD_LAB_NO_LABELS")),
                   help="hide the labelling panels (env GUARD_LAB_NO_LABELS=1)")
    p.add_argument("--neutralise-markers", action="store_true",
                   default=truthy(environ.get("GUARD_LAB_NEUTRALISE_MARKERS")),
                   help="rewrite text in messages that imitates the prompt's template "
                        "(<END CONVERSATION>, its instructions, lines starting 'Agent:' or "
                        "'S1:') before judging: a change from the official template (env "
                        "GUARD_LAB_NEUTRALISE_MARKERS=1)")
    p.add_argument("--concurrency", type=int,
                   default=int(environ["GUARD_LAB_CONCURRENCY"])
                   if environ.get("GUARD_LAB_CONCURRENCY") else None,
                   help="model runs at the same time (env GUARD_LAB_CONCURRENCY; default 1, "
                        "which fits one GPU); with --engine openai also the requests in flight, "
                        f"1 to 512, unless {ENV_OPENAI_CONCURRENCY} sets those (default 16)")
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
    p.add_argument("--leads", default=environ.get("GUARD_LAB_LEADS", ""),
                   help="reviewers who also resolve disagreements and may delete any label, "
                        "'carol,dave'; each must be one of --reviewers (env GUARD_LAB_LEADS)")
    return p


def _openai_window(engines: EngineOptions, concurrency: int | None,
                   environ: Mapping[str, str]) -> EngineOptions:
    """With --engine openai, --concurrency (GUARD_LAB_CONCURRENCY) also sets the requests in
    flight: a server takes many at once, and a batch evaluation needs them. The engine's own
    GUARD_LAB_OPENAI_CONCURRENCY, when set, sets them apart."""
    if concurrency is None or engines.engine != "openai" or environ.get(ENV_OPENAI_CONCURRENCY):
        return engines
    return replace(engines, openai_concurrency=concurrency)


def _serving(p: argparse.ArgumentParser, args: argparse.Namespace, environ: Mapping[str, str],
             on_space: bool) -> Serving:
    """The limits of a public server from the flags and GUARD_LAB_* variables (or p.error)."""
    try:
        state_ttl = int(environ.get("GUARD_LAB_STATE_TTL", Serving.state_ttl_s))
    except ValueError:
        p.error("GUARD_LAB_STATE_TTL must be a whole number of seconds, e.g. 7200")
    if state_ttl < 60:
        p.error(f"GUARD_LAB_STATE_TTL must be at least 60 seconds, got {state_ttl}")
    sizes = {}
    for variable, default in (("GUARD_LAB_MAX_FILE_SIZE", None),
                              ("GUARD_LAB_UPLOAD_QUOTA", Serving.upload_quota)):
        size = (environ.get(variable) or default or "").strip().lower() or None
        if size is not None and not re.fullmatch(r"\d+(b|kb|mb|gb)", size):
            p.error(f"{variable} must look like 50mb or 800kb, got {size!r}")
        sizes[variable] = size
    counts = {}
    for variable, default, least in (("GUARD_LAB_PROXY_HOPS", Serving.proxy_hops, 1),
                                     ("GUARD_LAB_UPLOAD_TTL", Serving.upload_ttl_s, 10),
                                     ("GUARD_LAB_SESSIONS_PER_VISITOR",
                                      Serving.sessions_per_visitor, 1),
                                     ("GUARD_LAB_DECODE_CONCURRENCY",
                                      Serving.decode_concurrency, 1)):
        try:
            counts[variable] = int(environ.get(variable) or default)
        except ValueError:
            p.error(f"{variable} must be a whole number, e.g. {default}")
        if counts[variable] < least:
            p.error(f"{variable} must be at least {least}, got {counts[variable]}")
    proxy = environ.get("GUARD_LAB_TRUST_PROXY")
    return Serving(queue_size=args.queue_size, per_visitor=args.per_visitor,
                   trust_proxy=truthy(proxy) if proxy is not None else on_space,
                   proxy_hops=counts["GUARD_LAB_PROXY_HOPS"],
                   state_ttl_s=state_ttl, max_file_size=sizes["GUARD_LAB_MAX_FILE_SIZE"],
                   upload_quota=sizes["GUARD_LAB_UPLOAD_QUOTA"],
                   upload_ttl_s=counts["GUARD_LAB_UPLOAD_TTL"],
                   sessions_per_visitor=counts["GUARD_LAB_SESSIONS_PER_VISITOR"],
                   decode_concurrency=counts["GUARD_LAB_DECODE_CONCURRENCY"])


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
    if args.concurrency is not None and args.concurrency < 1:
        p.error("--concurrency must be 1 or more")
    if args.queue_size < 1 or args.per_visitor < 1:
        p.error("--queue-size and --per-visitor (GUARD_LAB_QUEUE_SIZE, GUARD_LAB_PER_VISITOR) "
                "must be 1 or more")
    serving = _serving(p, args, environ, on_space)
    try:
        engines = _openai_window(engine_options(args, environ), args.concurrency, environ)
    except GuardError as exc:
        p.error(str(exc))
    for problem in engines.problems():
        p.error(problem)
    if args.prompt_guard_preprocessing not in PREPROCESSING:
        # argparse checks `choices` on the command line only, not on environment defaults.
        p.error(f"GUARD_LAB_PROMPT_GUARD_PREPROCESSING must be one of {', '.join(PREPROCESSING)}, "
                f"got {args.prompt_guard_preprocessing!r}")
    from guard_app.reviewers import LEADS_ENV, ReviewerGate, parse_accounts

    try:
        reviewers = parse_accounts(args.reviewers)
        ReviewerGate.from_config(reviewers, on_space=_hf_login(environ),
                                 environ={**environ, LEADS_ENV: args.leads})
    except ValueError as exc:
        p.error(str(exc))
    db = None
    reviewers_off = public_space_without_sign_in(environ, reviewers)
    if not args.no_labels and not reviewers_off:
        if args.db:
            db = Path(args.db)
        else:
            from labels.store import default_db_path

            db = default_db_path(environ)
    return Options(engines=engines, host=args.host, port=args.port, threshold=args.threshold,
                   max_images=args.max_images, db=db, concurrency=args.concurrency or 1,
                   data_dir=Path(args.data_dir) if args.data_dir else None,
                   reviewers=reviewers, on_space=_hf_login(environ), serving=serving,
                   reviewers_off=reviewers_off, policy=args.policy, leads=args.leads,
                   neutralise_markers=args.neutralise_markers,
                   prompt_guard_preprocessing=args.prompt_guard_preprocessing,
                   api_key=(environ.get("GUARD_LAB_API_KEY") or "").strip() or None)
