"""Guard Lab: Llama Guard 4 and Prompt Guard 2 in a browser, on Hugging Face Spaces or locally.

`python app.py` loads the real models (or says on the page which failed and why);
`python app.py --tiny` runs the tiny offline test models. `python app.py --help` lists options.
The page is a thin layer over `guard` (models) and `labels` (the label store).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guard_app import gpu
from guard_app.page import build_demo, launch

__all__ = ["build_demo", "launch", "main", "open_store"]


def _gate(options: Any):
    from guard_app.reviewers import ReviewerGate

    return ReviewerGate.from_config(options.reviewers, on_space=options.on_space)


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
    store = Store(db)
    if backups is not None:
        backups.start()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the final snapshot runs
    return store


def main(argv: Sequence[str] | None = None) -> None:
    from guard.cli import _quiet_transformers
    from guard.versions import check_or_exit
    from guard_app.config import parse_options
    from guard_app.models import load_models
    from guard_app.moderate.logic import engine_family
    from guard_app.tune.logic import tuner_for

    options = parse_options(argv)
    check_or_exit()
    store = open_store(options.db)  # before the models: a bad backup setting fails fast
    _quiet_transformers()
    loaded = load_models(options)
    if gpu.spaces is not None and loaded.prompt_guards is not None:
        loaded.prompt_guards.load_all()  # ZeroGPU forks workers: load before, not in, them
    gate = _gate(options)
    tuner, tune_off = tuner_for(store, options.engines, loaded.guards.llama_guard, db=options.db,
                                zero_gpu=gpu.spaces is not None,
                                public_without_accounts=options.on_space and not gate.restricted)
    demo = build_demo(loaded.guards, prompt_guards=loaded.prompt_guards,
                      default_prompt_guard=loaded.default_prompt_guard, store=store,
                      tiny=options.tiny, failures=loaded.failures, threshold=options.threshold,
                      max_images=options.max_images, concurrency=options.concurrency,
                      data_dir=options.data_dir, reviewers=gate,
                      serving=options.serving, api_key=options.api_key,
                      prompt_guard_preprocessing=options.prompt_guard_preprocessing,
                      tuner=tuner, tune_off=tune_off)
    launch(demo, family=engine_family(loaded.guards), server_name=options.host,
           server_port=options.port)


if __name__ == "__main__":
    main()
