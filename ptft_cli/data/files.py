"""Reading user data files into rows, with errors that name the file and row.

Pure Python (no torch), so `ptft validate` can check data in a fraction of a second. Tokenizing,
batching and padding live in `sampler.py`, `collate.py` and the task modules.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptft_cli.errors import DataError

# Python's csv module refuses fields over 128 KiB by default; a long document is a legitimate field.
csv.field_size_limit(2**31 - 1)

FORMATS_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".txt": "txt",
    ".text": "txt",
    ".raw": "txt",  # WikiText ships its text as .raw
}


@dataclass
class Table:
    """Rows of a data file; `lines[i]` is where row i starts in the file (1-based), for messages."""

    path: str
    rows: list[dict[str, Any]]
    lines: list[int]

    def where(self, i: int) -> str:
        return f"{self.path}:{self.lines[i]}"

    def column(self, name: str, role: str, key: str) -> list[Any]:
        """All values of a column, or a DataError naming the config `key` that chose it and listing
        the columns that do exist."""
        if not self.rows:
            return []
        missing = [i for i, row in enumerate(self.rows) if name not in row]
        if missing:
            present = sorted(self.rows[missing[0]].keys())
            raise DataError(
                f"no column {name!r} (the {role})",
                where=self.where(missing[0]),
                key=key,
                hint=f"columns here: {', '.join(map(str, present)) or 'none'}; set {key} to one of them",
            )
        return [row[name] for row in self.rows]


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        raise DataError(
            f"cannot tell the format from the extension {suffix or '(none)'!r}",
            where=path,
            hint=f"use one of {', '.join(sorted(FORMATS_BY_SUFFIX))} or set data.format",
        )
    return FORMATS_BY_SUFFIX[suffix]


def require_file(path: str, key: str, where: str) -> None:
    """A data file named by config `key` (set at `where`) must exist: say which line pointed at it."""
    problem = file_problem(Path(path))
    if problem:
        raise DataError(
            f"{path}: {problem}",
            where=where,
            key=key,
            hint="check the path (relative paths start at the config's folder)",
        )


def file_problem(p: Path) -> str | None:
    """Why `p` is not a regular file ptft can read (None if it is one). A FIFO or a device would
    block or never end, so only regular files count."""
    try:
        if p.is_file():
            return None
        if p.is_dir():
            return "is a directory, not a data file"
        return "is not a regular file" if p.exists() else "file not found"
    except OSError as e:  # a name too long, a symlink loop
        return f"cannot be read ({e.strerror})"


def read_table(path: str, fmt: str = "auto", *, text_column: str = "text") -> Table:
    """Read csv/tsv/jsonl/json/parquet (or txt: one `text_column` value per line) into rows."""
    fmt = detect_format(path, fmt)
    problem = file_problem(Path(path))
    if problem:
        raise DataError(
            problem, where=path, hint="check the path (relative paths start at the config's folder)"
        )
    if fmt == "parquet":
        table = _read_parquet(path)
    else:
        text = _read_text(path)
        reader = {
            "csv": _read_delimited,
            "tsv": _read_delimited,
            "jsonl": _read_jsonl,
            "json": _read_json,
            "txt": _read_txt,
        }
        table = reader[fmt](path, text, fmt=fmt, text_column=text_column)
    if not table.rows:
        raise DataError("no data rows", where=path, hint="the file is empty or holds only a header")
    return table


def _read_text(path: str) -> str:
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})",
            where=f"{path}:{line}",
            hint="re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
        ) from None
    # Normalise Windows line endings once, here, so no downstream code sees '\r'.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_delimited(path: str, text: str, *, fmt: str, text_column: str) -> Table:
    delimiter = "\t" if fmt == "tsv" else ","
    # TSV in the GLUE style has bare quote characters inside fields: read it literally.
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(
            "file is empty", where=path, hint="expected a header row, then one row per example"
        ) from None
    except csv.Error as e:
        raise DataError(f"malformed {fmt.upper()}: {e}", where=f"{path}:1") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(
            "the header row is empty", where=f"{path}:1", hint="the first row must name the columns"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"duplicate column name(s) {dupes} in the header", where=f"{path}:1")
    rows, lines = [], []
    record_start = reader.line_num + 1  # where the record being read begins (for an unclosed quote)
    try:
        for fields in reader:
            line = record_start
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                record_start = reader.line_num + 1
                continue  # blank line
            if len(fields) != len(header):
                raise DataError(
                    f"row has {len(fields)} fields but the header has {len(header)} ({', '.join(header)})",
                    where=f"{path}:{line}",
                    hint="quote fields that contain the delimiter"
                    if fmt == "csv"
                    else "TSV fields must not contain tabs",
                )
            rows.append(dict(zip(header, fields)))
            lines.append(line)
            record_start = reader.line_num + 1
    except csv.Error as e:
        hint = "a quote opened here is never closed" if "unexpected end of data" in str(e) else None
        raise DataError(f"malformed {fmt.upper()}: {e}", where=f"{path}:{record_start}", hint=hint) from None
    return Table(path, rows, lines)


def _read_jsonl(path: str, text: str, *, fmt: str, text_column: str) -> Table:
    rows, lines = [], []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except RecursionError:
            raise DataError("JSON nested too deeply", where=f"{path}:{n}") from None
        except json.JSONDecodeError as e:
            raise DataError(
                f"invalid JSON: {e.msg} (column {e.colno})",
                where=f"{path}:{n}",
                hint="one JSON object per line",
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"expected a JSON object, got {type(obj).__name__}",
                where=f"{path}:{n}",
                hint="one JSON object per line",
            )
        rows.append(obj)
        lines.append(n)
    return Table(path, rows, lines)


def _read_json(path: str, text: str, *, fmt: str, text_column: str) -> Table:
    try:
        obj = json.loads(text)
    except RecursionError:
        raise DataError("JSON nested too deeply", where=path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", where=f"{path}:{e.lineno}") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(
                "expected a list of objects (or an object holding exactly one such list)",
                where=path,
                hint="or use .jsonl",
            )
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(f"expected a list of objects, got {type(obj).__name__}", where=path)
    for i, row in enumerate(obj):
        if not isinstance(row, dict):
            raise DataError(f"item {i} is a {type(row).__name__}, not an object", where=path)
    # A .json file has no reliable row lines; number items from 1.
    return Table(path, obj, list(range(1, len(obj) + 1)))


def _read_txt(path: str, text: str, *, fmt: str, text_column: str) -> Table:
    rows, lines = [], []
    for n, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            rows.append({text_column: line})
            lines.append(n)
    return Table(path, rows, lines)


def _read_parquet(path: str) -> Table:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises many types for a corrupt file
        raise DataError(f"cannot read Parquet: {str(e).splitlines()[0]}", where=path) from None
    return Table(path, rows, list(range(1, len(rows) + 1)))


def read_hub_split(name: str, config: str | None, split: str, *, streaming: bool = False) -> Table:
    """One split of a Hugging Face dataset (a Hub id, or a local folder of data files).

    With `streaming`, rows are read lazily (`Table.rows` is then an iterable, not a list).
    """
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as e:  # network errors, missing configs, missing splits all surface here
        raise DataError(
            f"cannot load split {split!r}: {str(e).strip().splitlines()[0][:200]}",
            where=f"dataset {name}" + (f" ({config})" if config else ""),
            key="data.dataset",
            hint="check data.dataset, data.dataset_config and the split names; offline, use local files",
        ) from None
    label = f"{Path(name).name if Path(name).exists() else name}[{split}]"
    if streaming:
        return Table(label, ds, [])  # type: ignore[arg-type]
    rows = ds.to_list()
    return Table(label, rows, list(range(1, len(rows) + 1)))


def split_off(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random (train, held-out) index lists; at least one row held out when fraction > 0."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_out = max(1, round(n * fraction)) if fraction > 0 else 0
    return sorted(order[n_out:]), sorted(order[:n_out])


def seeded_subset(n: int, keep: int | None, seed: int) -> list[int]:
    """Indices of `keep` rows after a `random.Random(seed).shuffle` (all rows, in order, if keep is None)."""
    order = list(range(n))
    if keep is None:
        return order
    random.Random(seed).shuffle(order)
    return order[:keep]
