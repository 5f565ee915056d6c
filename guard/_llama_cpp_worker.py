"""The llama.cpp child process of guard.llama_cpp_engine: JSON lines in on stdin, out on stdout.

Run as a plain script (it imports nothing from `guard`), so a native crash in llama.cpp ends
this process only. Requests and replies:

    {"op": "load", "model_path": ..., "n_ctx": ..., "n_threads": ...}
        -> {"ok": true, "info": {...}}
    {"op": "classify", "prompts": [...], "max_tokens": 40}
        -> {"ok": true, "results": [{"text", "tokens", "prompt_tokens", "safe_logit", ...}]}
    {"op": "tokenize", "text": ...} -> {"ok": true, "tokens": [...]}
Failures reply {"ok": false, "kind": "load" | "context" | "input" | "internal", "message": ...}.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
import traceback


class Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Worker:
    def __init__(self) -> None:
        self.llm = None

    def load(self, model_path: str, n_ctx: int = 8192, n_threads: int | None = None,
             n_batch: int = 512) -> dict:
        import llama_cpp

        if not os.path.isfile(model_path):
            raise Refused("load", f"no GGUF file at {model_path}")
        try:
            self.llm = self._open(llama_cpp, model_path, n_ctx, n_threads, n_batch)
            n_ctx_train = llama_cpp.llama_model_n_ctx_train(self.llm.model)
            if 0 < n_ctx_train < n_ctx:  # beyond what the model was trained on: shrink
                self.llm.close()
                self.llm = self._open(llama_cpp, model_path, n_ctx_train, n_threads, n_batch)
        except (ValueError, RuntimeError, OSError) as exc:
            raise Refused("load", f"llama.cpp could not load {model_path}: {exc}") from exc
        llm = self.llm
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llm.n_vocab()
        self.safe_id = self._single_token("safe")
        self.unsafe_id = self._single_token("unsafe")
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(llm.model, desc, len(desc))
        return {"n_ctx": llm.n_ctx(), "n_ctx_train": n_ctx_train, "desc": desc.value.decode(),
                "n_vocab": self.n_vocab, "safe_id": self.safe_id, "unsafe_id": self.unsafe_id,
                "llama_cpp_version": getattr(llama_cpp, "__version__", "")}

    @staticmethod
    def _open(llama_cpp, model_path: str, n_ctx: int, n_threads: int | None, n_batch: int):
        return llama_cpp.Llama(model_path, n_ctx=n_ctx, n_threads=n_threads,
                               n_threads_batch=n_threads, n_batch=n_batch, logits_all=False,
                               verbose=False)

    def _single_token(self, word: str) -> int:
        ids = self.llm.tokenize(word.encode(), add_bos=False, special=False)
        if len(ids) != 1:
            raise Refused("load", f"the model's tokenizer splits '{word}' into {len(ids)} tokens; "
                                  "this is not a Llama Guard model")
        return ids[0]

    def tokenize(self, text: str) -> list[int]:
        # The prompt carries its own <|begin_of_text|>: never add a second one.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def classify(self, prompts: list[str], max_tokens: int = 40) -> list[dict]:
        return [self._one(prompt, max_tokens) for prompt in prompts]

    def _one(self, prompt: str, max_tokens: int) -> dict:
        import llama_cpp
        import numpy as np

        started = time.perf_counter()
        llm = self.llm
        tokens = self.tokenize(prompt)
        if len(tokens) + max_tokens > llm.n_ctx():
            raise Refused("context", json.dumps({"tokens": len(tokens), "n_ctx": llm.n_ctx()}))
        # Keep the KV cache of the prefix shared with the previous prompt (the policy text).
        common = 0
        for a, b in zip(llm.input_ids[:llm.n_tokens].tolist(), tokens, strict=False):
            if a != b:
                break
            common += 1
        llm.n_tokens = min(common, len(tokens) - 1)
        pending = tokens[llm.n_tokens:]
        generated, pairs = [], []
        for _ in range(max_tokens):
            llm.eval(pending)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                           shape=(self.n_vocab,))
            token = int(np.argmax(logits))
            pairs.append((float(logits[self.safe_id]), float(logits[self.unsafe_id])))
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            generated.append(token)
            pending = [token]
        step = self._decision_step(generated)
        text = llm.detokenize(generated).decode("utf-8", errors="replace")
        return {"text": text, "tokens": generated, "prompt_tokens": len(tokens),
                "safe_logit": pairs[step][0], "unsafe_logit": pairs[step][1],
                "decision_step": step, "seconds": time.perf_counter() - started}

    def _decision_step(self, generated: list[int]) -> int:
        """Where 'safe' or 'unsafe' was produced (after the blank line), as in LlamaGuard."""
        for i, token in enumerate(generated):
            if token in (self.safe_id, self.unsafe_id):
                return i
        for i, token in enumerate(generated):
            if self.llm.detokenize([token]).strip():
                return i
        return 0

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "load":
            return {"ok": True, "info": self.load(**request["args"])}
        if self.llm is None:
            raise Refused("internal", "no model loaded")
        if op == "classify":
            return {"ok": True, "results": self.classify(request["prompts"],
                                                         request.get("max_tokens", 40))}
        if op == "tokenize":
            return {"ok": True, "tokens": self.tokenize(request["text"])}
        raise Refused("internal", f"unknown op {op!r}")


def main() -> None:
    # Replies go to a private copy of stdout; anything native code prints lands on stderr and
    # cannot corrupt the protocol.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = worker.handle(json.loads(line))
        except Refused as exc:
            reply = {"ok": False, "kind": exc.kind, "message": str(exc)}
        except Exception as exc:  # reported to the parent, which raises it as a GuardError
            traceback.print_exc()
            reply = {"ok": False, "kind": "internal", "message": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
