"""Llama Guard on llama.cpp (CPU, quantized GGUF), in a child process a native crash cannot escape.

The project renders the prompt; the child (guard/_llama_cpp_worker.py, via llama-cpp-python)
tokenizes its pieces without adding a BOS (the template's control tokens as tokens, the text
between them with special-token parsing off, so a message cannot spell a control token),
decodes greedily and returns the logits of 'safe' and 'unsafe' (every spelling, with and without
a leading space) at the decision step, from which p_unsafe is computed exactly as on
transformers.
A dead child becomes a `WorkerCrashed` error; the next call starts a fresh one.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import json
import queue
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from guard.core import limits
from guard.core.categories import Family, categories_for, guess_family
from guard.core.conversation import Conversation
from guard.core.errors import ContextTooLong, GuardError, InvalidConversation, ModelLoadError
from guard.core.prompts import CustomCategory, PromptPlan
from guard.core.verdict import DEFAULT_THRESHOLD, Verdict, make_verdict, p_unsafe_from_logits
from guard.engines.engine import Capabilities, EngineBase, ModelInfo

WORKER = Path(__file__).with_name("_llama_cpp_worker.py")
MAX_NEW_TOKENS = 40
LOAD_TIMEOUT_S = 600.0


class WorkerCrashed(GuardError):
    """The llama.cpp child process died or stopped answering."""


class ImagesNotSupported(InvalidConversation):
    """llama.cpp runs Llama Guard on text only."""


def resolve_gguf(spec: str | Path, *, revision: str | None = None,
                 token: str | None = None) -> Path:
    """A local .gguf path, or 'REPO:FILE' on the Hugging Face Hub (FILE may be a glob).

    `token=None` lets huggingface_hub read HF_TOKEN or the saved login itself.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    text = str(spec)
    if ":" not in text or text.count("/") < 1:
        raise ModelLoadError(f"No GGUF file at {text}. Pass a path to a .gguf file or "
                             "REPO:FILE, e.g. QuantFactory/Meta-Llama-Guard-2-8B-GGUF:*Q4_K_M.gguf.")
    repo_id, filename = text.split(":", 1)
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError

        if any(ch in filename for ch in "*?["):
            files = [f for f in HfApi(token=token).list_repo_files(repo_id, revision=revision)
                     if fnmatch.fnmatch(f, filename)]
            if len(files) != 1:
                raise ModelLoadError(
                    f"{filename} matches {len(files)} files in {repo_id} "
                    f"({', '.join(files[:6]) or 'none'}); name exactly one GGUF file.")
            filename = files[0]
        return Path(hf_hub_download(repo_id, filename, revision=revision, token=token))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not download {filename} from {repo_id}: check the repository and file names, "
            f"the network, and HF_TOKEN for gated repositories. ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''})") from exc


class _Child:
    """One running worker process with its pipes; `request` sends a line and waits for one."""

    def __init__(self, load_args: dict[str, Any]) -> None:
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1)
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_replies, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.info = self.request({"op": "load", "args": load_args}, LOAD_TIMEOUT_S)["info"]

    def _read_replies(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put(None)  # end of file: the child is gone

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip("\n"))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.stop(graceful=False)
            raise WorkerCrashed(
                f"The llama.cpp worker did not answer within {timeout:g} s and was stopped; "
                "the next call starts a new one. Try a shorter conversation or more threads."
            ) from None
        if line is None:
            raise self._died()
        reply = json.loads(line)
        if not reply["ok"]:
            raise self._refusal(reply["kind"], reply["message"])
        return reply

    def _died(self) -> WorkerCrashed:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.stop(graceful=False)
            code = self.proc.returncode
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit status {code}")
        tail = " | ".join(line for line in list(self.stderr_tail)[-5:] if line.strip())
        return WorkerCrashed(
            f"The llama.cpp worker process died ({how}); this request was not judged. It "
            "restarts on the next call; if it keeps dying, check memory and the GGUF file."
            + (f" Last output: {tail[-600:]}" if tail else ""))

    @staticmethod
    def _refusal(kind: str, message: str) -> GuardError:
        if kind == "load":
            return ModelLoadError(f"Could not load the GGUF model: {message}.")
        if kind == "context":
            sizes = json.loads(message)
            return ContextTooLong(
                f"The prompt is {sizes['tokens']:,} tokens; the llama.cpp context holds "
                f"{sizes['n_ctx']:,} with the answer. Shorten the conversation or load with a "
                "larger n_ctx.")
        if kind == "input":
            return ModelLoadError(f"The GGUF model cannot read this prompt: {message}. Check "
                                  "the file and --family.")
        return GuardError(f"llama.cpp failed: {message}")

    def stop(self, graceful: bool = True) -> None:
        """End the child: closing its stdin ends its loop; a busy or stuck one is killed."""
        if self.proc.poll() is None:
            try:
                if not graceful:
                    raise subprocess.TimeoutExpired(WORKER.name, 0)
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        # stdout and stderr are closed by their reader threads' end of file.
        with contextlib.suppress(OSError):
            self.proc.stdin.close()


class LlamaCppGuard(EngineBase):
    """A GGUF Llama Guard served by a llama.cpp child process. Calls are serialised."""

    def __init__(self, model_path: Path, *, family: Family, name: str, n_ctx: int = 8192,
                 n_threads: int | None = None, request_timeout: float = 600.0) -> None:
        self.model_path = model_path
        self.family = family
        self.name = name
        self.request_timeout = request_timeout
        self._load_args = {"model_path": str(model_path), "n_ctx": n_ctx, "n_threads": n_threads}
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._start()

    @classmethod
    def load(cls, gguf: str | Path, *, family: Family | str | None = None, n_ctx: int = 8192,
             n_threads: int | None = None, revision: str | None = None,
             token: str | None = None, request_timeout: float = 600.0) -> LlamaCppGuard:
        """Start a worker on a local .gguf or 'REPO:FILE'. Needs llama-cpp-python installed."""
        try:
            import llama_cpp  # noqa: F401  (checked here so the error is a ModelLoadError)
        except ImportError as exc:
            raise ModelLoadError(
                "The llama.cpp engine needs llama-cpp-python: pip install llama-cpp-python"
            ) from exc
        path = resolve_gguf(gguf, revision=revision, token=token)
        return cls(path, family=Family(family or guess_family(str(gguf))), name=str(gguf),
                   n_ctx=n_ctx, n_threads=n_threads, request_timeout=request_timeout)

    def _start(self) -> _Child:
        try:
            child = _Child(self._load_args)
        except WorkerCrashed as exc:
            raise ModelLoadError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        self._child = child
        self._finalizer = weakref.finalize(self, child.stop)
        self.info = child.info
        return child

    @property
    def pid(self) -> int | None:
        """The worker's process id (None before it starts)."""
        return self._child.proc.pid if self._child else None

    def close(self) -> None:
        if self._child is not None:
            self._child.stop()

    def __enter__(self) -> LlamaCppGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        with self._lock:
            child = self._child
            if child is None:
                child = self._start()  # the last one died and said so: start afresh
            elif not child.alive:
                self._child = None
                raise child._died()
            try:
                return child.request(message, timeout or self.request_timeout)
            except WorkerCrashed:
                self._child = None
                raise

    # Text only; no logits outside the decision step; one prompt after another in the worker;
    # a quantized file holds the weights it was given.
    capabilities = Capabilities()

    def describe(self) -> ModelInfo:
        return ModelInfo(name=self.name, family=self.family.value, device="cpu",
                         dtype=self.info.get("desc", "gguf"), revision=None,
                         context_limit=int(self.info["n_ctx"]), multimodal=False,
                         engine="llama-cpp", capabilities=self.capabilities)

    def plan(self, conversation: Conversation, excluded: Iterable[str] = (),
             custom: Sequence[CustomCategory] = ()) -> PromptPlan:
        if conversation.images:
            raise ImagesNotSupported(
                "llama.cpp runs Llama Guard on text only and this conversation has "
                f"{len(conversation.images)} image(s). Remove the images, or judge it with Llama "
                "Guard 4 on the transformers engine or an OpenAI-compatible server.")
        return super().plan(conversation, excluded, custom)

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids for `text` (special tokens parsed, no BOS added)."""
        return self._call({"op": "tokenize", "text": text})["tokens"]

    def prompt_tokens(self, prompt_plan: PromptPlan) -> list[int]:
        """The token ids the model is given for a plan: what `classify` feeds it."""
        return self._call({"op": "tokenize_pieces", "pieces": _pieces(prompt_plan)})["tokens"]

    def classify_batch(self, conversations: Sequence[Conversation], excluded: Iterable[str] = (), *,
                       threshold: float = DEFAULT_THRESHOLD, custom: Sequence[CustomCategory] = (),
                       batch_size: int | None = 16,
                       excluded_per_item: Sequence[Iterable[str]] | None = None,
                       ) -> list[Verdict]:
        """Judge many conversations, one after another in the worker, `batch_size` per request
        (16 when None)."""
        plans = self.plans(conversations, excluded, custom, excluded_per_item)
        batch_size = batch_size or 16
        table = categories_for(self.family)
        verdicts = []
        for start in range(0, len(plans), batch_size):
            if start:
                limits.check_time(start // batch_size, -(-len(plans) // batch_size))
            chunk = plans[start:start + batch_size]
            reply = self._call({"op": "classify", "prompts": [_pieces(p) for p in chunk],
                                "max_tokens": MAX_NEW_TOKENS})
            for prompt_plan, result in zip(chunk, reply["results"], strict=True):
                verdicts.append(make_verdict(
                    result["text"], p_unsafe_from_logits(result["safe_logit"], result["unsafe_logit"]),
                    prompt_plan.categories, table, threshold=threshold,
                    prompt_tokens=result["prompt_tokens"], images=0, seconds=result["seconds"],
                    model=self.name, family=self.family.value,
                    special_token_text=result["special_text"]))
        return verdicts


def _pieces(prompt_plan: PromptPlan) -> list[list[Any]]:
    return [[p.text, p.special] for p in prompt_plan.pieces]

