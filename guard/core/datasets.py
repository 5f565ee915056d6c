"""Dataset readers: CSV or JSON Lines files, and the two public sets, as rows to evaluate.

A file that cannot be read at all raises DatasetError. A row that cannot be used (no prompt, an
unknown label, a broken JSON line) is reported as a BadRow with its line number; the good rows
still run. Plain text or gzip-compressed, told apart by the first bytes, not the file name.

Files are streamed, a megabyte at a time: the whole text is never held, and reading stops with
a DatasetError as soon as the decompressed bytes pass `limits.MAX_DATASET_BYTES` or the rows
pass `limits.MAX_DATASET_ROWS`.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from guard.core import limits
from guard.core.categories import parse_codes
from guard.core.conversation import Conversation, assistant, unencodable, user
from guard.core.errors import DatasetError

FORMATS = ("xstest", "openai-moderation", "jsonl", "csv")

# Column names accepted for each field, first match wins.
PROMPT_COLUMNS = ("prompt", "text", "input")
RESPONSE_COLUMNS = ("response", "output")
LABEL_COLUMNS = ("label", "gold")
CATEGORY_COLUMNS = ("categories",)
ID_COLUMNS = ("id",)
# Prompt Guard's ground truth: is the prompt an attack (jailbreak or prompt injection)? A column
# apart from `label`, which says whether the content is harmful: a toxic plain request is no
# attack, and an attack may ask for nothing harmful.
ATTACK_COLUMNS = ("attack",)
MALICIOUS_WORDS = ("true", "1", "malicious", "jailbreak", "injection")
BENIGN_WORDS = ("false", "0", "benign")

_UNSAFE_WORDS = {"unsafe", "1", "true", "yes"}
_SAFE_WORDS = {"safe", "0", "false", "no"}

MODERATION_FLAGS = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")
# OpenAI's moderation flags do not map 1:1 onto the MLCommons S-codes. This mapping is
# deliberately conservative: each flag goes to the one code it most plainly falls under, and
# harassment (HR) has no counterpart, so it adds no code (the row is still gold unsafe).
MODERATION_TO_CODES: dict[str, tuple[str, ...]] = {
    "S": ("S12",),   # sexual -> Sexual Content
    "H": ("S10",),   # hate -> Hate
    "V": ("S1",),    # violence -> Violent Crimes
    "HR": (),        # harassment -> no S-code
    "SH": ("S11",),  # self-harm -> Suicide & Self-Harm
    "S3": ("S4",),   # sexual/minors -> Child Sexual Exploitation
    "H2": ("S10",),  # hate/threatening -> Hate
    "V2": ("S1",),   # violence/graphic -> Violent Crimes
}


@dataclass(frozen=True)
class Row:
    """One item to judge. `gold` is True for unsafe, None when the file gives no label;
    `attack` is True for a jailbreak or prompt injection, None when the file does not say."""

    row_id: str
    line: int
    prompt: str
    response: str | None = None
    gold: bool | None = None
    categories: tuple[str, ...] = ()
    attack: bool | None = None

    @property
    def size(self) -> int:
        """A cheap stand-in for the prompt length, used to group rows of like length."""
        return len(self.prompt) + len(self.response or "")


@dataclass(frozen=True)
class BadRow:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Dataset:
    path: str
    format: str
    sha256: str  # of the file's bytes: a resumed run must read the same data
    rows: tuple[Row, ...]
    bad_rows: tuple[BadRow, ...]

    @property
    def has_categories(self) -> bool:
        return any(r.categories for r in self.rows) or self.format == "openai-moderation"

    @property
    def has_attack(self) -> bool:
        """Whether some row says whether its prompt is an attack: Prompt Guard's ground truth."""
        return any(r.attack is not None for r in self.rows)


class _RowError(ValueError):
    """A row cannot be used; the message says why."""


def read_dataset(path: str | Path, format: str) -> Dataset:
    """Read `path` as `format` (one of FORMATS)."""
    if format not in FORMATS:
        raise DatasetError(f"Unknown format '{format}'. Use one of: {', '.join(FORMATS)}.")
    path = Path(path)
    with _Source(path) as source:
        csv_like = format in ("xstest", "csv")
        records = (_csv_records(path, source.lines()) if csv_like
                   else _jsonl_records(source.lines()))
        parse = {"xstest": _xstest_row, "openai-moderation": _moderation_row}.get(format,
                                                                                 _generic_row)
        rows: list[Row] = []
        bad: list[BadRow] = []
        seen: dict[str, int] = {}
        columns_checked = False
        for count, (line, record) in enumerate(records, start=1):
            if count > limits.MAX_DATASET_ROWS:
                raise DatasetError(
                    f"{path} has more than {limits.MAX_DATASET_ROWS:,} rows; Guard Lab reads at "
                    "most that many from one dataset. Split it into smaller files.")
            if isinstance(record, _RowError):
                bad.append(BadRow(line, str(record)))
                continue
            if not columns_checked:
                _check_columns(path, format, record)
                columns_checked = True
            try:
                row = parse(line, record)
            except _RowError as exc:
                bad.append(BadRow(line, str(exc)))
                continue
            if row.row_id in seen:
                bad.append(BadRow(line, f"id '{row.row_id}' repeats the row on line "
                                        f"{seen[row.row_id]}; ids must be unique"))
                continue
            seen[row.row_id] = line
            rows.append(row)
        sha256 = source.sha256()
    if not rows and not bad:
        raise DatasetError(f"{path} holds no rows. Check that it is the file you meant.")
    return Dataset(str(path), format, sha256, tuple(rows), tuple(bad))


_CHUNK = 1 << 20
_LINE_END = re.compile(r"\r\n|\n|\r")


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n:,} bytes"


class _Source:
    """The decompressed bytes of a dataset file, read a chunk at a time: each chunk is counted
    against the limit and hashed as it passes, then dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = hashlib.sha256()
        self._read = 0
        try:
            self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by __exit__)
        except FileNotFoundError:
            raise DatasetError(f"No dataset file at {path}.") from None
        except IsADirectoryError:
            raise DatasetError(f"{path} is a folder; name a CSV or JSONL file.") from None
        except OSError as exc:
            raise DatasetError(f"Cannot read {path}: {exc.strerror or exc}.") from None
        try:
            self.compressed = self._file.read(2) == b"\x1f\x8b"
            self._file.seek(0)
            size = os.fstat(self._file.fileno()).st_size
            if not self.compressed and size > limits.MAX_DATASET_BYTES:
                raise self._too_large()
        except BaseException:
            self._file.close()
            raise
        self._stream: IO[bytes] = (gzip.GzipFile(fileobj=self._file) if self.compressed
                                   else self._file)
        self._chunks = self._read_chunks()

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self._chunks.close()
        self._file.close()

    def _too_large(self) -> DatasetError:
        what = " once decompressed" if self.compressed else ""
        return DatasetError(
            f"{self.path} is larger than {_size(limits.MAX_DATASET_BYTES)}{what}; Guard Lab "
            "reads at most that from one dataset. Split it into smaller files.")

    def _read_chunks(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._stream.read(_CHUNK)
            except (OSError, EOFError, zlib.error) as exc:
                if self.compressed:
                    raise DatasetError(
                        f"{self.path} looks gzip-compressed but is damaged ({exc}).") from None
                raise DatasetError(f"Cannot read {self.path}: {exc}.") from None
            if not chunk:
                return
            self._read += len(chunk)
            if self._read > limits.MAX_DATASET_BYTES:
                raise self._too_large()
            self._digest.update(chunk)
            yield chunk

    def lines(self) -> Iterator[str]:
        """The text, line by line, each line with its ending (\\n, \\r\\n or \\r), as csv wants."""
        # surrogatepass: bytes that encode a lone surrogate (ED A0 80, written by tools that
        # encode UTF-16 halves one by one) decode to it, so that row alone is refused as bad;
        # any other byte that is not UTF-8 still fails the file.
        decoder = codecs.getincrementaldecoder("utf-8-sig")("surrogatepass")
        parts: list[str] = []  # the line read so far; a line may span chunks
        offset = 0
        for chunk in self._chunks:
            held = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise self._not_utf8(offset - held + exc.start) from None
            offset += len(chunk)
            start = 0
            if parts and parts[-1].endswith("\r") and text:
                # A chunk ended in "\r": the line ended there, or "\n" follows it here.
                if text.startswith("\n"):
                    parts.append("\n")
                    start = 1
                yield "".join(parts)
                parts = []
            for match in _LINE_END.finditer(text, start):
                if match.group() == "\r" and match.end() == len(text):
                    break  # maybe the first half of "\r\n": decide with the next chunk
                parts.append(text[start:match.end()])
                yield "".join(parts)
                parts, start = [], match.end()
            if start < len(text):
                parts.append(text[start:])
        held = len(decoder.getstate()[0])
        try:
            tail = decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise self._not_utf8(offset - held + exc.start) from None
        if tail:
            parts.append(tail)
        if parts:
            yield "".join(parts)

    def _not_utf8(self, byte: int) -> DatasetError:
        return DatasetError(f"{self.path} is not UTF-8 text (byte {byte}). Save it as UTF-8 "
                            "CSV or JSON Lines.")

    def sha256(self) -> str:
        """The hash of all the decompressed bytes, reading what the records left unread."""
        for _ in self._chunks:
            pass
        return self._digest.hexdigest()


def _csv_records(path: Path, lines: Iterator[str]
                 ) -> Iterator[tuple[int, Mapping[str, Any] | _RowError]]:
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path} is empty.") from None
    except csv.Error as exc:
        raise DatasetError(f"{path} is not a readable CSV file ({exc}).") from None
    header = [h.strip().lower() for h in header]
    for name in header:
        problem = unencodable(name)
        if problem is not None:
            raise DatasetError(f"{path} has a column name that is not text ({problem}). Fix "
                               "the header line.")
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, _RowError(f"not valid CSV ({exc})")
            return
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            # A record may span several physical lines; report where it starts.
            yield line, _RowError(f"has {len(values)} fields, the header has {len(header)}")
            continue
        problem = next((f"the column {ascii(name)}: {found}. Fix or remove the row"
                        for name, value in zip(header, values, strict=True)
                        if (found := unencodable(value)) is not None), None)
        if problem is not None:
            yield line, _RowError(problem)
            continue
        yield line, dict(zip(header, values, strict=True))


def _jsonl_records(lines: Iterator[str]) -> Iterator[tuple[int, Mapping[str, Any] | _RowError]]:
    for line, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield line, _RowError(f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            yield line, _RowError("nests its JSON too deeply; a row is a flat object like "
                                  "{\"prompt\": \"...\"}")
            continue
        if not isinstance(record, dict):
            yield line, _RowError("must be a JSON object like {\"prompt\": \"...\"}")
            continue
        # A surrogate comes from a JSON escape or from bytes that encode one: look only then.
        problem = (_unencodable(record) if "\\u" in raw or unencodable(raw) is not None
                   else None)
        if problem is not None:
            yield line, _RowError(problem)
            continue
        yield line, {str(k).lower(): v for k, v in record.items()}


def _unencodable(record: Mapping[str, Any]) -> str | None:
    """What in a JSON row cannot be encoded as UTF-8 (a lone surrogate), or None."""
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, Mapping):
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                problem = unencodable(str(key))
                if problem is not None:
                    return f"the field name {ascii(name)}: {problem}. Fix or remove the row"
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = unencodable(value)
            if problem is not None:
                return f"the field {ascii(where)}: {problem}. Fix or remove the row"
    return None


def _check_columns(path: Path, format: str, record: Mapping[str, Any]) -> None:
    """Missing columns fail the whole file: every row would fail the same way."""
    if format == "xstest":
        needed = {"prompt": ("prompt",), "label": ("label",)}
    elif format == "openai-moderation":
        needed = {"prompt": ("prompt",)}
    else:
        needed = {"prompt": PROMPT_COLUMNS}
    missing = [name for name, options in needed.items() if not any(o in record for o in options)]
    if missing:
        what = "field" if format in ("jsonl", "openai-moderation") else "column"
        hint = " (or text, input)" if missing == ["prompt"] and format in ("jsonl", "csv") else ""
        raise DatasetError(f"{path} has no {what} {', '.join(missing)}{hint}; found: "
                           f"{', '.join(record) or 'nothing'}.")


def _first(record: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in record and record[name] is not None and str(record[name]).strip() != "":
            return record[name]
    return None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _RowError(f"{what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise _RowError(f"{what} is empty")
    return value


def parse_gold(value: Any) -> bool | None:
    """'unsafe'/'1'/'true' -> True, 'safe'/'0'/'false' -> False, missing -> None."""
    if value is None:
        return None
    word = str(value).strip().lower()
    if isinstance(value, bool):
        word = "true" if value else "false"
    if word in _UNSAFE_WORDS:
        return True
    if word in _SAFE_WORDS:
        return False
    if word == "":
        return None
    raise _RowError(f"label '{value}' is not one of safe/unsafe/0/1/true/false")


def parse_attack(value: Any) -> bool | None:
    """The attack column: true/1/malicious/jailbreak/injection -> True, false/0/benign -> False,
    missing or empty -> None; anything else is refused with the accepted values."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower()
    if word in MALICIOUS_WORDS:
        return True
    if word in BENIGN_WORDS:
        return False
    if word == "":
        return None
    raise _RowError(f"attack {str(value)!r} is not one of {'/'.join(MALICIOUS_WORDS)} "
                    f"(an attack) or {'/'.join(BENIGN_WORDS)} (benign); leave it empty when "
                    "the row does not say")


def _codes(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise _RowError(f"categories must be text like 'S1,S10' or a list, got {value!r}")
    return parse_codes(value)


def _row_id(record: Mapping[str, Any], line: int) -> str:
    value = _first(record, ID_COLUMNS)
    return str(value).strip() if value is not None else str(line)


def _generic_row(line: int, record: Mapping[str, Any]) -> Row:
    prompt = _first(record, PROMPT_COLUMNS)
    if prompt is None:
        raise _RowError("the prompt is empty")
    response = _first(record, RESPONSE_COLUMNS)
    return Row(
        row_id=_row_id(record, line), line=line, prompt=_text(prompt, "the prompt"),
        response=None if response is None else _text(response, "the response"),
        gold=parse_gold(_first(record, LABEL_COLUMNS)),
        categories=_codes(_first(record, CATEGORY_COLUMNS)),
        attack=parse_attack(_first(record, ATTACK_COLUMNS)))


def _xstest_row(line: int, record: Mapping[str, Any]) -> Row:
    gold = parse_gold(record.get("label"))
    if gold is None:
        raise _RowError("the label is empty; XSTest rows are safe or unsafe")
    return Row(row_id=_row_id(record, line), line=line,
               prompt=_text(record.get("prompt"), "the prompt"), gold=gold)


def _moderation_row(line: int, record: Mapping[str, Any]) -> Row:
    flags = []
    for flag in MODERATION_FLAGS:
        # Samples carry only the flags they were annotated for; an absent flag is not set.
        value = record.get(flag.lower(), 0)
        if value not in (0, 1):
            raise _RowError(f"flag {flag} must be 0 or 1, got {value!r}")
        if value == 1:
            flags.append(flag)
    codes: list[str] = []
    for flag in flags:
        codes += [c for c in MODERATION_TO_CODES[flag] if c not in codes]
    return Row(row_id=_row_id(record, line), line=line,
               prompt=_text(record.get("prompt"), "the prompt"), gold=bool(flags),
               categories=tuple(codes))


def conversation_for(row: Row) -> Conversation:
    """A prompt alone is judged as the user's turn; with a response, the response is judged."""
    turns = [user(row.prompt)]
    if row.response is not None:
        turns.append(assistant(row.response))
    return Conversation.build(turns)
