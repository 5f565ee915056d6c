"""The llama.cpp child process of guard.engines.llama_cpp_engine: JSON lines in on stdin, out on stdout.

Run as a plain script (it imports nothing from `guard`), so a native crash in llama.cpp ends
this process only. Requests and replies:

    {"op": "load", "model_path": ..., "n_ctx": ..., "n_threads": ...}
        -> {"ok": true, "info": {...}}
    {"op": "classify", "prompts": [...], "max_tokens": 40}
        -> {"ok": true, "results": [{"text", "tokens", "prompt_tokens", "safe_logit", ...}]}
    {"op": "tokenize", "text": ...} -> {"ok": true, "tokens": [...]}
    {"op": "tokenize_pieces", "pieces": [[text, special], ...]}
        -> {"ok": true, "tokens": [...], "special_text": bool}

A prompt is a list of [text, special] pieces: a special piece is one of the template's control
tokens, and text pieces are tokenized with special-token parsing off, so text that spells a
control token stays text. (A plain string prompt is tokenized with special tokens parsed.)
'safe_logit' and 'unsafe_logit' are the log-sum-exp of the logits of every single-token
spelling of the word ('safe' and ' safe'), at the step where one of them was generated.
Failures reply {"ok": false, "kind": "load" | "context" | "input" | "internal", "message": ...}.
"""

from __future__ import annotations

import ctypes
import json
import math
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
        self.safe_ids = self._spellings("safe")
        self.unsafe_ids = self._spellings("unsafe")
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(llm.model, desc, len(desc))
        return {"n_ctx": llm.n_ctx(), "n_ctx_train": n_ctx_train, "desc": desc.value.decode(),
                "n_vocab": self.n_vocab, "safe_ids": self.safe_ids, "unsafe_ids": self.unsafe_ids,
                "safe_id": self.safe_ids[0], "unsafe_id": self.unsafe_ids[0],
                "llama_cpp_version": getattr(llama_cpp, "__version__", "")}

    @staticmethod
    def _open(llama_cpp, model_path: str, n_ctx: int, n_threads: int | None, n_batch: int):
        return llama_cpp.Llama(model_path, n_ctx=n_ctx, n_threads=n_threads,
                               n_threads_batch=n_threads, n_batch=n_batch, logits_all=False,
                               verbose=False)

    def _spellings(self, word: str) -> list[int]:
        """The single tokens that spell `word`, with and without a leading space."""
        ids = []
        for spelling in (word, " " + word):
            tokens = self.llm.tokenize(spelling.encode(), add_bos=False, special=False)
            if len(tokens) == 1 and tokens[0] not in ids:
                ids.append(tokens[0])
        if not ids:
            raise Refused("load", f"the model's tokenizer has no single token for '{word}'; "
                                  "this is not a Llama Guard model")
        return ids

    def tokenize(self, text: str) -> list[int]:
        # The prompt carries its own <|begin_of_text|>: never add a second one.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def tokenize_pieces(self, pieces: list) -> tuple[list[int], bool]:
        """Ids of a prompt's pieces, and whether a text piece spelled a special token."""
        tokens, special_text = [], False
        for text, special in pieces:
            data = text.encode("utf-8")
            if special:
                ids = self.llm.tokenize(data, add_bos=False, special=True)
                if len(ids) != 1:
                    raise Refused("input", f"the model has no special token {text}: it does not "
                                           "belong to the family this prompt was written for")
                tokens += ids
                continue
            ids = self.llm.tokenize(data, add_bos=False, special=False)
            special_text = special_text or ids != self.llm.tokenize(data, add_bos=False,
                                                                    special=True)
            tokens += ids
        return tokens, special_text

    def classify(self, prompts: list, max_tokens: int = 40) -> list[dict]:
        return [self._one(prompt, max_tokens) for prompt in prompts]

    def _one(self, prompt: str | list, max_tokens: int) -> dict:
        import llama_cpp
        import numpy as np

        started = time.perf_counter()
        llm = self.llm
        if isinstance(prompt, str):
            tokens, special_text = self.tokenize(prompt), False
        else:
            tokens, special_text = self.tokenize_pieces(prompt)
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
            pairs.append((_logsumexp([float(logits[i]) for i in self.safe_ids]),
                          _logsumexp([float(logits[i]) for i in self.unsafe_ids])))
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            generated.append(token)
            pending = [token]
        step = self._decision_step(generated)
        text = llm.detokenize(generated).decode("utf-8", errors="replace")
        return {"text": text, "tokens": generated, "prompt_tokens": len(tokens),
                "safe_logit": pairs[step][0], "unsafe_logit": pairs[step][1],
                "decision_step": step, "special_text": special_text,
                "seconds": time.perf_counter() - started}

    def _decision_step(self, generated: list[int]) -> int:
        """Where 'safe' or 'unsafe' was produced, in any spelling, as in LlamaGuard."""
        decision = {*self.safe_ids, *self.unsafe_ids}
        for i, token in enumerate(generated):
            if token in decision:
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
        if op == "tokenize_pieces":
            tokens, special_text = self.tokenize_pieces(request["pieces"])
            return {"ok": True, "tokens": tokens, "special_text": special_text}
        raise Refused("internal", f"unknown op {op!r}")


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


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
