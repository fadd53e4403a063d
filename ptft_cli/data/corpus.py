"""Text corpora for language modelling: files → documents → pieces of text → token ids.

A corpus is read as pieces of text (at most ~1 MB each, so a multi-GB file never sits in memory
whole) with a flag saying whether a document ends after the piece; the tokenizer turns pieces into
one stream of token ids with a separator (EOS or SEP) between documents. Every piece comes with the
`Cursor` just after it, so a streamed corpus can be reopened exactly there (resume by position,
never by reading the corpus again from the start).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptft_cli.config import Config
from ptft_cli.data import files as data_files
from ptft_cli.errors import DataError

PIECE_CHARS = 1 << 20  # a document longer than this is tokenized in pieces cut at line ends
ENCODE_BATCH_CHARS = 4 << 20  # characters handed to the tokenizer per call
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


# ---------------------------------------------------------------------------------------------
# Which files (pure Python)


def expand(patterns: str | list[str] | None, key: str, where: str) -> list[Path]:
    """Paths and globs → existing files, in a stable order; an unmatched entry is an error that
    names the config line and key (`where`, `key`) as well as the path."""
    if patterns is None:
        return []
    out: list[Path] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(
                    f"no files match {pattern}",
                    where=where,
                    key=key,
                    hint="check the pattern (relative to the config's folder)",
                )
            out.extend(matches)
        else:
            p = Path(pattern)
            problem = data_files.file_problem(p)
            if problem:
                raise DataError(
                    f"{p}: {problem}",
                    where=where,
                    key=key,
                    hint="check the path (relative paths start at the config's folder)",
                )
            out.append(p)
    seen: set[Path] = set()
    for p in out:
        if p.resolve() in seen:
            raise DataError(
                f"{p} is listed twice", where=where, key=key, hint="name each file once (globs may overlap)"
            )
        seen.add(p.resolve())
    return out


@dataclass
class CorpusFiles:
    """Where the text comes from: files, or splits of a Hugging Face dataset (data.dataset)."""

    train: list[Path]
    validation: list[Path]
    hub_train: str | None = None
    hub_validation: str | None = None

    def where(self, cfg: Config, split: str) -> str:
        paths = self.train if split == "train" else self.validation
        return str(paths[0]) if paths else f"dataset {cfg.data.dataset}"


def corpus_files(cfg: Config) -> CorpusFiles:
    d = cfg.data
    if d.dataset:
        return CorpusFiles([], [], d.train_split, d.validation_split)
    if not d.train:
        raise DataError(
            "no training corpus",
            where=cfg.where("data"),
            key="data.train",
            hint="set data.train to text files or globs",
        )
    return CorpusFiles(
        expand(d.train, "data.train", cfg.where("data.train")),
        expand(d.validation, "data.validation", cfg.where("data.validation")),
    )


# ---------------------------------------------------------------------------------------------
# Documents and pieces (pure Python)


@dataclass(frozen=True)
class Piece:
    text: str
    ends_document: bool
    where: str  # file:line where the piece starts, for messages


@dataclass(frozen=True)
class Cursor:
    """Where a corpus reader resumes: reading from here yields exactly the pieces that followed."""

    file: int = 0  # index into the file list (0 for a Hub split)
    offset: int = 0  # .txt: byte offset of the next line; tables and Hub splits: the next row
    line: int = 1  # .txt: that line's number (for messages)
    continued: bool = False  # .txt with whole-file documents: the document began in an earlier piece

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_pieces(
    paths: list[Path], *, fmt: str, text_column: str, boundary: str, start: Cursor | None = None
) -> Iterator[tuple[Piece, Cursor]]:
    """Every document of every file from `start`, as pieces of at most ~PIECE_CHARS characters,
    each with the cursor just after it."""
    start = start or Cursor()
    for index in range(start.file, len(paths)):
        path = paths[index]
        at = start if index == start.file else Cursor(index)
        kind = data_files.detect_format(str(path), fmt)
        if kind == "txt":
            yield from _txt_pieces(path, index, boundary, at)
            continue
        table = data_files.read_table(str(path), kind, text_column=text_column)
        values = table.column(text_column, "text", key="data.text_column")
        for i in range(at.offset, len(values)):
            value = values[i]
            if not isinstance(value, str):
                raise DataError(
                    f"text in column {text_column!r} is a {type(value).__name__}, not text",
                    where=table.where(i),
                )
            if value.strip():
                yield Piece(value, True, table.where(i)), Cursor(index, i + 1)


def iter_hub_pieces(
    name: str, config: str | None, split: str, *, text_column: str, streaming: bool, start: int = 0
) -> Iterator[tuple[Piece, Cursor]]:
    """One document per row of a Hugging Face dataset split (streamed when `streaming`), from row `start`."""
    table = data_files.read_hub_split(name, config, split, streaming=streaming)
    if streaming:  # an IterableDataset: skip rows without tokenizing them
        rows = table.rows.skip(start) if start else table.rows  # type: ignore[attr-defined]
    else:
        rows = table.rows[start:]
    for i, row in enumerate(rows, start=start + 1):
        if text_column not in row:
            raise DataError(
                f"no column {text_column!r} (the text)",
                where=f"{table.path}:{i}",
                key="data.text_column",
                hint=f"columns here: {', '.join(map(str, row))}; set data.text_column",
            )
        value = row[text_column]
        if isinstance(value, str) and value.strip():
            yield Piece(value, True, f"{table.path}:{i}"), Cursor(0, i)


def pieces_of(
    cfg: Config, paths: list[Path], hub_split: str | None = None, start: Cursor | None = None
) -> Iterator[tuple[Piece, Cursor]]:
    """The configured corpus (files or a Hub split) as (piece, cursor after it)."""
    d = cfg.data
    if hub_split is not None:
        assert d.dataset is not None
        return iter_hub_pieces(
            d.dataset,
            d.dataset_config,
            hub_split,
            text_column=d.text_column,
            streaming=d.streaming,
            start=start.offset if start else 0,
        )
    return iter_pieces(
        paths, fmt=d.format, text_column=d.text_column, boundary=d.document_boundary, start=start
    )


def _txt_lines(path: Path, at: Cursor) -> Iterator[tuple[int, str, int]]:
    """(line number, line with its newline, byte offset after it) of a UTF-8 file from `at`, read
    lazily; CRLF becomes LF."""
    offset = at.offset
    with open(path, "rb") as f:
        f.seek(offset)
        for n, raw in enumerate(f, start=at.line):
            offset += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not UTF-8 (byte 0x{raw[e.start]:02x})",
                    where=f"{path}:{n}",
                    hint="re-save the file as UTF-8",
                ) from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            if line.endswith("\r\n"):
                line = line[:-2] + "\n"
            yield n, line, offset


def _txt_pieces(path: Path, index: int, boundary: str, at: Cursor) -> Iterator[tuple[Piece, Cursor]]:
    buf: list[str] = []
    size, start, continued = 0, at.line, at.continued
    done = Cursor(index + 1)  # after the file's last piece, the next file starts
    for n, line, offset in _txt_lines(path, at):
        after = Cursor(index, offset, n + 1, continued)
        if boundary == "line":
            if line.strip():
                yield Piece(line.rstrip("\n"), True, f"{path}:{n}"), after
            continue
        if boundary == "paragraph" and not line.strip():
            if buf:
                yield Piece("".join(buf).strip("\n"), True, f"{path}:{start}"), after
            buf, size = [], 0
            continue
        if not buf:
            start = n
        buf.append(line)
        size += len(line)
        if size >= PIECE_CHARS:  # a long document continues in the next piece
            continued = True
            yield Piece("".join(buf), False, f"{path}:{start}"), Cursor(index, offset, n + 1, True)
            buf, size = [], 0
    text = "".join(buf)
    if boundary == "paragraph" and text.strip():
        yield Piece(text.strip("\n"), True, f"{path}:{start}"), done
    elif boundary == "file" and (text.strip() or continued):
        yield Piece(text, True, f"{path}:{start}"), done  # the whole file is one document, newlines kept


@dataclass
class Texts:
    """The corpus read into memory and split (non-streaming runs)."""

    train: list[Piece]
    validation: list[Piece]


def read_pieces(cfg: Config, paths: list[Path], hub_split: str | None = None) -> list[Piece]:
    return [piece for piece, _ in pieces_of(cfg, paths, hub_split)]


def read_texts(cfg: Config, files: CorpusFiles) -> Texts:
    """The training and validation text; without a validation source, the corpus's tail is held out."""
    train = read_pieces(cfg, files.train, files.hub_train)
    if not any(p.text.strip() for p in train):
        raise DataError(
            "the training corpus is empty",
            where=files.where(cfg, "train"),
            key="data.train",
            hint="point data.train at text files with content",
        )
    if files.validation or files.hub_validation:
        validation = read_pieces(cfg, files.validation, files.hub_validation)
        if not any(p.text.strip() for p in validation):
            raise DataError(
                "the validation corpus is empty",
                where=files.where(cfg, "validation"),
                key="data.validation",
            )
    elif cfg.data.validation_fraction > 0:
        train, validation = split_tail(train, cfg.data.validation_fraction)
    else:
        validation = []
    return Texts(train, validation)


def split_tail(pieces: list[Piece], fraction: float) -> tuple[list[Piece], list[Piece]]:
    """Hold out the last `fraction` of the corpus characters (cutting one piece in two, as nanoGPT)."""
    total = sum(len(p.text) for p in pieces)
    cut = total - round(total * fraction)
    seen = 0
    for i, p in enumerate(pieces):
        if seen + len(p.text) >= cut:
            k = cut - seen
            head = [*pieces[:i], Piece(p.text[:k], False, p.where)] if k else pieces[:i]
            tail = [Piece(p.text[k:], p.ends_document, p.where), *pieces[i + 1 :]]
            return head, tail
        seen += len(p.text)
    return pieces, []


# ---------------------------------------------------------------------------------------------
# Tokenizing


@dataclass
class TokenStream:
    """Token ids of a whole split, plus its size in characters and UTF-8 bytes (for bits per char/byte)."""

    ids: np.ndarray  # (N,) uint32
    chars: int
    bytes: int


@dataclass
class Segments:
    """Tokenized units (documents or sentences) in one array: unit i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # concatenated token ids, uint32
    offsets: np.ndarray  # (n + 1,) int64
    doc: np.ndarray  # (n,) int64: which document each unit belongs to

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return (
        tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"] if texts else []
    )


def _batched(pieces: Iterable[tuple[Piece, Cursor]]) -> Iterator[list[tuple[Piece, Cursor]]]:
    batch: list[tuple[Piece, Cursor]] = []
    size = 0
    for item in pieces:
        batch.append(item)
        size += len(item[0].text)
        if size >= ENCODE_BATCH_CHARS or len(batch) >= 4096:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def iter_token_chunks(
    pieces: Iterable[tuple[Piece, Cursor]], tokenizer: Any, separator: int
) -> Iterator[tuple[np.ndarray, Cursor]]:
    """Token ids of the pieces, with `separator` after each document, in chunks (bounded memory),
    each with the cursor after its last piece."""
    for batch in _batched(pieces):
        out: list[int] = []
        for (piece, _), ids in zip(batch, _encode(tokenizer, [p.text for p, _ in batch])):
            out.extend(ids)
            if piece.ends_document:
                out.append(separator)
        yield np.asarray(out, dtype=np.uint32), batch[-1][1]


def tokenize_stream(pieces: list[Piece], tokenizer: Any, separator: int) -> TokenStream:
    chunks = [ids for ids, _ in iter_token_chunks(((p, Cursor()) for p in pieces), tokenizer, separator)]
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)
    return TokenStream(
        ids, sum(len(p.text) for p in pieces), sum(len(p.text.encode("utf-8")) for p in pieces)
    )


def tokenize_segments(pieces: list[Piece], tokenizer: Any, *, sentences: bool, max_tokens: int) -> Segments:
    """One unit per document (line mode) or per sentence (NSP), each truncated to `max_tokens`."""
    texts: list[str] = []
    docs: list[int] = []
    doc = 0
    for p in pieces:
        units = [u for u in (SENTENCE_END.split(p.text) if sentences else [p.text]) if u.strip()]
        for u in units:
            texts.append(u.strip())
            docs.append(doc)
        if p.ends_document:
            doc += 1
    ids: list[np.ndarray] = []
    for start in range(0, len(texts), 4096):
        ids.extend(
            np.asarray(x[:max_tokens], dtype=np.uint32)
            for x in _encode(tokenizer, texts[start : start + 4096])
        )
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    keep = lengths > 0
    ids = [x for x, k in zip(ids, keep) if k]
    offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint32)
    return Segments(flat, offsets, np.asarray(docs, dtype=np.int64)[keep])


def token_chunks_from(
    cfg: Config, files: CorpusFiles, tokenizer: Any, separator: int
) -> Callable[[Cursor | None], Iterator[tuple[np.ndarray, Cursor]]]:
    """Streaming: a function that tokenizes the training corpus on the fly from a cursor."""

    def chunks(start: Cursor | None) -> Iterator[tuple[np.ndarray, Cursor]]:
        return iter_token_chunks(pieces_of(cfg, files.train, files.hub_train, start), tokenizer, separator)

    return chunks
