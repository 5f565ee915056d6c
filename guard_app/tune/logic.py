"""Tuning from the page: how many labels are usable, one background run at a time, its progress,
and the before/after comparison when it ends. No gradio here.

The run tunes a fresh copy of the base checkpoint (never the served model, which may carry an
adapter and keeps answering visitors meanwhile), writes the adapter next to the labels database,
then judges the held-out labels with the base and with the adapter as four stored runs, exactly
as `python -m guard.tune train` and `compare` do. Serving the new adapter takes a restart with
`--adapter DIR`: a model that changes under reviewers would mix their labels.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from guard.core.errors import GuardError
from guard.engines import loading
from guard.engines.loading import EngineOptions
from guard.tune.data import check_usable, from_store
from guard.tune.errors import TuneError
from labels import Store

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HERE = "<the database's folder>"  # what the page says instead of a server path


@dataclass(frozen=True)
class TuneState:
    """A snapshot of the page's tuning run."""

    phase: str = "idle"  # idle, loading, tuning, comparing, done, failed
    step: int = 0
    total: int = 0
    loss: float | None = None
    message: str = ""
    adapter_dir: str = ""
    comparison: str = ""  # guard.tune.compare.format_before_after
    flips: int = 0
    fixed: int = 0  # flips to the reviewers' label
    broke: int = 0  # flips away from it
    started: float = 0.0
    ended: float = 0.0

    @property
    def running(self) -> bool:
        return self.phase in ("loading", "tuning", "comparing")

    def line(self) -> str:
        """One sentence for the status line."""
        if self.phase == "idle":
            return "No tuning run yet."
        if self.phase == "loading":
            return "Loading a fresh copy of the base model..."
        if self.phase == "tuning":
            loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
            return f"Tuning: step {self.step} of {self.total}{loss}."
        if self.phase == "comparing":
            return "Judging the held-out labels with the base and with the adapter..."
        took = f" in {self.ended - self.started:.0f} s" if self.ended else ""
        if self.phase == "done":  # the adapter's name, never where the server keeps it
            name = Path(self.adapter_dir).name
            return (f"Done{took}: adapter {name} is in the folder adapters beside the labels "
                    f"database; {self.flips} held-out verdicts changed. Serve it with: python "
                    f"app.py --adapter {HERE}/adapters/{name}")
        return f"Tuning stopped{took}: {self.message}"


class Tuner:
    """One tuning run at a time for the whole server (they share the one machine)."""

    def __init__(self, store: Store, engines: EngineOptions, family: str, *,
                 adapters_dir: Path, settings: Any = None,
                 load_base: Callable[[], Any] | None = None, compare_batch: int = 8):
        self.store = store
        self.engines = engines
        self.family = family
        self.adapters_dir = Path(adapters_dir)
        self.settings = settings
        self._load_base = load_base or (lambda: loading.load_llama_guard(
            replace(engines, adapter=None)))
        self.compare_batch = compare_batch
        self._state = TuneState()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def usable(self) -> tuple[str, bool]:
        """(a sentence on the usable labels, whether there are enough to tune)."""
        data = from_store(self.store, self.family)
        counts = data.counts
        left_out = "; ".join(f"{n} {why}" for why, n in sorted(data.skipped.items()))
        sentence = (f"{len(data.examples)} labelled examples usable ({counts['safe']} safe, "
                    f"{counts['unsafe']} unsafe)" + (f"; left out: {left_out}" if left_out else ""))
        try:
            check_usable(data)
        except TuneError as exc:
            return self._unpathed(f"{sentence}. {exc}"), False
        return f"{sentence}: enough to tune.", True

    def state(self) -> TuneState:
        with self._lock:
            return self._state

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def start(self, name: str | None = None) -> TuneState:
        """Check the name and the labels, then tune in a background thread."""
        name = (name or "").strip() or time.strftime("tuned-%Y%m%d-%H%M%S")
        if not NAME.fullmatch(name):
            raise TuneError("Name the adapter with letters, digits, '.', '_' or '-' (at most 64, "
                            f"starting with a letter or digit), not {name!r}.")
        out = self.adapters_dir / name
        if (out / "guard_lab_adapter.json").exists():
            raise TuneError(f"An adapter named {name} is finished already ({HERE}/adapters/"
                            f"{name}); pick another name.")
        data = from_store(self.store, self.family)
        try:
            check_usable(data)  # too few labels, or too few of one class: say so before any work
        except TuneError as exc:
            raise type(exc)(self._unpathed(str(exc))) from None
        with self._lock:
            if self._state.running:
                raise TuneError("A tuning run is going on already; wait for it to end (its "
                                "progress is shown below).")
            self._state = TuneState(phase="loading", started=time.time(), adapter_dir=str(out))
            self._thread = threading.Thread(target=self._run, args=(data, out), daemon=True,
                                            name=f"tune-{name}")
            self._thread.start()
            return self._state

    def wait(self, timeout: float | None = None) -> TuneState:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state()

    def _run(self, data: Any, out: Path) -> None:
        from guard.tune.compare import compare_adapter, format_before_after
        from guard.tune.train import TuneSettings, tune

        try:
            base = self._load_base()

            def progress(step: int, total: int, loss: float) -> None:
                self._set(phase="tuning", step=step, total=total, loss=loss)

            self._set(phase="tuning")
            tune(base, data, out, self.settings or TuneSettings(), name=out.name,
                 progress=progress)
            self._set(phase="comparing")
            result = compare_adapter(base, out, self.store, batch_size=self.compare_batch)
            self._set(phase="done", ended=time.time(), comparison=format_before_after(result),
                      flips=len(result.held_out.flips), fixed=len(result.held_out.fixed),
                      broke=len(result.held_out.broke))
        except GuardError as exc:
            self._set(phase="failed", ended=time.time(), message=self._unpathed(str(exc)))
        except Exception as exc:  # noqa: BLE001 (a background thread: the page must hear of it)
            self._set(phase="failed", ended=time.time(),
                      message=self._unpathed(f"{type(exc).__name__}: {str(exc)[:300]}"))

    def _unpathed(self, text: str) -> str:
        """`text` with the server's folders named as the page names them."""
        home = self.adapters_dir.parent
        for folder in sorted({str(home.resolve()), str(home)}, key=len, reverse=True):
            if folder not in ("", "."):
                text = text.replace(folder, HERE)
        return text


def tuner_for(store: Store | None, engines: EngineOptions, llama_guard: Any, *, db: Path | None,
              zero_gpu: bool, public_without_accounts: bool) -> tuple[Tuner | None, str]:
    """The server's tuner, or None and why tuning is off here."""
    if store is None or db is None:
        return None, ("Tuning reads the labels database, which is off on this server. Start the "
                      "app with --db PATH (or set GUARD_LAB_DB).")
    if llama_guard is None:
        return None, "Llama Guard did not load on this server (see the banner), so it cannot be tuned."
    if not llama_guard.capabilities.adapters:
        return None, (f"Tuning needs the transformers engine; this server runs Llama Guard on "
                      f"{engines.engine}. Tune with python -m guard.tune on a machine with the "
                      "checkpoint.")
    if zero_gpu:
        return None, ("Tuning needs a GPU held for minutes; ZeroGPU lends one per call. Tune with "
                      "python -m guard.tune on a GPU machine, then start the Space with --adapter "
                      "DIR (GUARD_LAB_ADAPTER).")
    if public_without_accounts:
        return None, ("Tuning on a public Space needs reviewer accounts: set GUARD_LAB_REVIEWERS "
                      "so that only reviewers can start it.")
    family = llama_guard.family.value
    return Tuner(store, engines, family, adapters_dir=Path(db).parent / "adapters"), ""
