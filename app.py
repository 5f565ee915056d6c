"""Guard Lab: Llama Guard 4 and Prompt Guard 2 in a browser, on Hugging Face Spaces or locally.

`python app.py` loads the real models (or says on the page which failed and why);
`python app.py --tiny` runs the tiny offline test models. `python app.py --help` lists options.
The page is a thin layer over `guard` (models) and `labels` (the label store).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # a line before the imports below, which take seconds on a cold machine
    from guard_app.startup import Startup

    STARTUP = Startup()
    STARTUP.step()

from guard_app import gpu  # noqa: E402
from guard_app.page import build_demo, launch  # noqa: E402

__all__ = ["build_demo", "launch", "main", "open_labels", "open_store"]


def _gate(options: Any):
    import os

    from guard_app.reviewers import LEADS_ENV, ReviewerGate

    return ReviewerGate.from_config(options.reviewers, on_space=options.on_space,
                                    environ={**os.environ, LEADS_ENV: options.leads})


def open_store(db: Path | None) -> Any:
    """The labels store, restored from its backup first when the file is missing (labels.backup).

    Snapshots then run on their interval and once more when the process ends (SIGTERM too, which
    is how a Space is stopped).
    """
    if db is None:
        return None
    import signal
    import sys

    from labels import Store
    from labels.backup import BackupError, from_environ

    try:
        backups = from_environ(db)
        if backups is not None:
            backups.restore_if_missing()  # before Store creates the file
    except (ValueError, BackupError) as exc:
        raise SystemExit(f"Labels backup: {exc}") from None
    store = Store(db)  # labels.store.DatabaseFault when the file cannot be used
    try:
        store.check_integrity()
    except BaseException:
        store.close()
        raise
    if backups is not None:
        backups.start()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the final snapshot runs
    return store


def open_labels(db: Path | None) -> tuple[Any, dict[str, str]]:
    """`open_store`, or, when the database cannot be used (damaged, read-only, no folder), no
    store and the banner's words: the app then starts with labels off, so the models stay up,
    and the log gets one line naming the file, the problem and how to restore it."""
    import sys

    from labels.store import CorruptDatabase, DatabaseFault

    try:
        return open_store(db), {}
    except DatabaseFault as exc:
        print(f"error: labels are off: {exc}", file=sys.stderr, flush=True)
        problem = (f"{exc.path.name} is damaged ({exc.problem})"
                   if isinstance(exc, CorruptDatabase) else str(exc).rstrip("."))
        return None, {"The labels database": (
            f"{problem}, so labelling, review queues, batch evaluation and tuning are off. The "
            "server's log says how to restore it (from the backup, when backups are on).")}


def public_model_names(guards: Any) -> None:
    """Models loaded from a folder of this server go by the folder's name (what results, runs,
    /v1's `model` and the banner say), never by the server path (guard_app.access.model_id)."""
    from guard_app.access import model_id

    for engine in (guards.llama_guard, guards.prompt_guard):
        if engine is not None:
            engine.name = model_id(engine.name)


def _default_policy(spec: str | None, store: Any, guards: Any) -> Any:
    """`--policy NAME|FILE`, checked against the loaded family; a bad one stops the start."""
    from guard.core.errors import GuardError
    from guard_app.moderate.logic import engine_family
    from guard_app.policies import load_default

    try:
        policy = load_default(spec, store)
        if policy is not None:
            policy.check_family(engine_family(guards))
    except GuardError as exc:
        raise SystemExit(f"error: {exc}") from None
    return policy


def main(argv: Sequence[str] | None = None) -> None:
    from guard.cli import _quiet_transformers
    from guard.core.prompts import set_neutralise_markers
    from guard.versions import check_or_exit
    from guard_app.config import parse_options
    from guard_app.models import llama_guard_label, load_models
    from guard_app.moderate.logic import engine_family
    from guard_app.startup import Startup
    from guard_app.tune.logic import tuner_for
    from labels.backup import vanishing_labels_warning

    progress = globals().get("STARTUP") or Startup(done=1)
    progress.step()
    options = parse_options(argv)
    check_or_exit()
    progress.step(str(options.db) if options.db else "labels are off")
    # Before the models: a bad backup setting fails fast.
    store, labels_off = open_labels(options.db)
    set_neutralise_markers(options.neutralise_markers)
    _quiet_transformers()
    progress.step(llama_guard_label(options.engines) + (" (tiny test models)" if options.tiny
                                                        else ""))
    loaded = load_models(options)
    public_model_names(loaded.guards)
    default_policy = _default_policy(options.policy, store, loaded.guards)
    if gpu.spaces is not None and loaded.prompt_guards is not None:
        loaded.prompt_guards.load_all()  # ZeroGPU forks workers: load before, not in, them
    gate = _gate(options)
    tuner, tune_off = tuner_for(store, options.engines, loaded.guards.llama_guard, db=options.db,
                                zero_gpu=gpu.spaces is not None,
                                public_without_accounts=bool(options.reviewers_off)
                                or (options.on_space and not gate.restricted))
    progress.step()
    demo = build_demo(loaded.guards, prompt_guards=loaded.prompt_guards,
                      default_prompt_guard=loaded.default_prompt_guard, store=store,
                      tiny=options.tiny, failures={**loaded.failures, **labels_off},
                      threshold=options.threshold,
                      max_images=options.max_images, concurrency=options.concurrency,
                      data_dir=options.data_dir, reviewers=gate,
                      serving=options.serving, api_key=options.api_key,
                      prompt_guard_preprocessing=options.prompt_guard_preprocessing,
                      tuner=tuner, tune_off=tune_off, reviewers_off=options.reviewers_off,
                      default_policy=default_policy,
                      notices=tuple(filter(None, [vanishing_labels_warning(options.db)])))
    progress.step(f"http://{options.host}:{options.port}")
    launch(demo, family=engine_family(loaded.guards), server_name=options.host,
           server_port=options.port, on_ready=progress.ready)


if __name__ == "__main__":
    main()
