"""Fuzz ptft with broken input: never lose a user's data, never hang, never a traceback.

Takes every YAML file under configs/ (made runnable offline in seconds: data paths point at small
generated files, models shrink to 2 layers x 32 wide, 2 training steps, Hub models become a tiny BERT
built here) plus generated data files (csv, tsv, jsonl, json, parquet, txt) and tiny model
directories, mutates them, and runs each case as `python -m ptft_cli COMMAND --config ...` in a fresh
temporary folder with a time limit. Cases are a pure function of `--seed`.

    .venv/bin/python scripts/fuzz_inputs.py [--cases 500] [--seed 0] [--jobs 2] [--timeout 30]
        [--keep-failures DIR] [--out report.json] [--only 12,40] [--family yaml] [--list]

Mutation families (the `family` column of the summary):
  baseline    the runnable configs as they are, with validate, evaluate and predict (expected: ok)
  wrong-type  every schema key of `ptft_cli.config.reference()` (and every section) given a value of
              the wrong type: words for numbers, lists, mappings, booleans, null, empty and blank
              strings, dates, near-miss choices; in the file or with --set
  range       every numeric key: negative, 0, -0.0, 1e30, -1e30, .inf, -.inf, .nan, beyond 64 bits,
              10**400, 1e400, denormals, non-integer floats; plus valid extremes that do run
              (mlm_probability 1, max_length 2, vocab_size 1, temperature 1e-30, keep_checkpoints 0 ...)
  yaml        aliases, merge keys, alias bombs (list and mapping, at string, list, mapping and section
              keys), recursive aliases, lists and mappings nested 100 to 50,000 deep, duplicate keys,
              tabs, non-UTF-8 bytes, BOMs, UTF-16, NUL and control characters, empty / comment-only /
              multi-document files, a list or scalar at top level, odd key types, YAML 1.1 oddities
              (sexagesimal, octal, `no`), !!python/object tags (which must never execute), !!binary,
              !!set, !!timestamp, unknown tags, a 2 MB value, 3,000 unknown keys
  data        data files damaged: truncated (mid-row, mid-quote, mid-UTF-8), zero-byte, header only,
              missing or renamed columns, empty rows, ragged rows, unclosed quotes, 2 MB fields, non-UTF-8,
              UTF-16, BOM, NUL bytes, binary junk, CR-only line ends, label ids out of range, JSON nested
              100,000 deep, parquet truncated or with wrong column types, a directory / FIFO / dangling
              symlink / symlink loop / device where a file is expected, the same file listed twice,
              data.format not matching the file; for training, validation, evaluate and predict inputs
  model       model directories damaged: zero-byte, truncated or junk model.safetensors, a malicious
              pickle as pytorch_model.bin, config.json missing / empty / invalid / wrong model_type,
              tokenizer files missing or truncated; checkpoints damaged for --resume (training_state.pt,
              state.json, checkpoint.json, config.yaml, metrics.jsonl, data_position.npz, with
              checkpoint.json's sizes fixed up so the damage is not caught by the size check); run folders
              with the marker, lock or checkpoints/ damaged; a pretrained model whose embedding matrix
              has more rows than its tokenizer has tokens
  paths       missing files and folders; a file where a folder is expected and the reverse; output_dir
              equal to the config's folder, above it, `~`, a data folder, under /proc or /sys,
              /dev/null, inside a file; cache_dir on the config folder, a data file or the run;
              --output equal to --input, to a data file, a folder, /proc; names with `#`, `:`,
              spaces, unicode, glob characters, a leading dash, 300-character components; a config
              that is missing, a folder, a FIFO, /dev/null; the shipped configs verbatim (Hub ids offline)
  commands    pretrain / finetune / evaluate / predict / validate on configs for other commands,
              --overwrite and --resume auto|PATH on fresh, finished and foreign runs, --resume with a
              changed key, odd --set forms, --prompt variants

Each case runs in its own folder (HOME and TMPDIR inside it, Hub offline, OMP_NUM_THREADS=1) and is
classified:
  ok               exit 0
  user error       exit 2 with at least one `error:` line and no traceback
  TRACEBACK        exit 1, or "Traceback" in the output
  HANG             still running after --timeout seconds (the process group is killed)
  BAD EXIT         any other exit status (including a kill for using more than --max-rss-gb memory)
  CHANGED OUTSIDE  a file outside output_dir / evaluate.output_dir / predict.output / data.cache_dir
                   (or the tool caches in HOME) was added, changed or removed, or any input (config,
                   data, models, other runs) changed at all; snapshots compare type, size, mtime and
                   SHA-1 of every file in the case folder
Flags (reported, not failures): `no location` (an exit-2 message without a location before its
first `: `), `long line` (an output line over 500 characters), `wrote on error` (exit 2, yet files
appeared in the run, cache or output folders), `accepted` (exit 0 for input that is plainly wrong).

Prints one line per failing or flagged case as it finishes, then counts per outcome and per family,
the distinct failures (grouped by their last output line), the slowest cases and the wall time.
`--out` writes all of it as JSON; `--keep-failures DIR` writes, for every failing or flagged case, a
folder with the case as it was before the run (proj/...), `cmd.sh`, `output.txt` and `result.json`.
Exit status 1 if any case is TRACEBACK, HANG, BAD EXIT or CHANGED OUTSIDE.

Timing (2-core CPU): setup (a tiny BERT, the data files, one 2-step training run per config, each
also checked as a baseline) takes ~35 s; a case that stops in the config check takes ~0.5 s (mostly
the interpreter start), one that loads a model or trains 3-8 s, a hang the full --timeout. The default
500 cases took 6.3 minutes in all on an idle machine (9.3 minutes while another job shared it).
Reproduce one case with `--only ID --keep-failures DIR`, then `sh DIR/caseID-*/cmd.sh`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import glob
import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml
from tiny_corpus import OBJECTS, SUBJECTS, VERBS, corpus_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FATAL = ("TRACEBACK", "HANG", "BAD EXIT", "CHANGED OUTSIDE")
OUTCOMES = ("ok", "user error", *FATAL)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CFG = "cfg/config.yaml"  # every case's config, relative to the case's working folder `proj/`

# --------------------------------------------------------------------------------------------
# Generated data: labelled sentences and a small corpus a 2-layer model reads in a blink

POSITIVE = ["good", "great", "excellent", "lovely", "superb", "wonderful", "fun", "brilliant"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull", "poor", "weak", "horrible"]
NEUTRAL = ["the", "film", "movie", "was", "really", "very", "plot", "acting", "and", "it", "a", "story"]


def sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(NEUTRAL, rng.randint(2, 8)) + [rng.choice(POSITIVE if i % 2 == 0 else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def corpus(paragraphs: int, seed: int) -> str:
    return corpus_text(seed, paragraphs=paragraphs)


def csv_bytes(header: list[str], rows: Iterable[Iterable[Any]], delimiter: str = ",") -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def parquet_bytes(columns: dict[str, list[Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def build_data(folder: Path) -> None:
    """The data every case starts from (cfg/data/): ~100 KB in all."""
    folder.mkdir(parents=True)
    train, val, texts = sentences(48, 1), sentences(16, 2), sentences(12, 3)
    files: dict[str, bytes] = {
        "train.csv": csv_bytes(["text", "label"], train),
        "validation.csv": csv_bytes(["text", "label"], val),
        "train.tsv": csv_bytes(["sentence", "label"], [(t, int(y == "positive")) for t, y in train], "\t"),
        "dev.tsv": csv_bytes(["sentence", "label"], [(t, int(y == "positive")) for t, y in val], "\t"),
        "pairs_train.csv": csv_bytes(
            ["sentence1", "sentence2", "label"],
            [
                (a, b, "equivalent" if (ya == yb) != (len(a) % 3 == 0) else "not_equivalent")
                for (a, ya), (b, yb) in zip(train, train[2:] + train[:2])
            ],
        ),
        "pairs_validation.csv": csv_bytes(
            ["sentence1", "sentence2", "label"],
            [
                (a, b, "equivalent" if (ya == yb) != (len(a) % 3 == 0) else "not_equivalent")
                for (a, ya), (b, yb) in zip(val, val[1:] + val[:1])
            ],
        ),
        "train.jsonl": "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in train).encode(),
        "train.json": json.dumps([{"text": t, "label": y} for t, y in train]).encode(),
        "train.parquet": parquet_bytes({"text": [t for t, _ in train], "label": [y for _, y in train]}),
        "texts.txt": "".join(t + "\n" for t, _ in texts).encode(),
        "texts.jsonl": "".join(
            json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, (t, _) in enumerate(texts)
        ).encode(),
        "texts.csv": csv_bytes(["text"], [(t,) for t, _ in texts]),
        "corpus.txt": corpus(40, 1).encode(),
        "corpus2.txt": corpus(20, 2).encode(),
        "valid.txt": corpus(10, 3).encode(),
        "corpus/a.txt": corpus(25, 4).encode(),
        "corpus/b.txt": corpus(25, 5).encode(),
        "corpus.jsonl": "".join(json.dumps({"text": p}) + "\n" for p in corpus(40, 6).split("\n\n")).encode(),
        "corpus.csv": csv_bytes(["text"], [(p.strip(),) for p in corpus(40, 7).split("\n\n")]),
        "corpus.parquet": parquet_bytes({"text": [p.strip() for p in corpus(40, 8).split("\n\n")]}),
        "prompts.txt": b"The cat\nA dog liked\nMy friend\n",
        "masked.txt": b"the cat [MASK] the garden.\na dog [MASK] a good story.\n",
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


def build_tiny_bert(folder: Path, extra_rows: int = 0) -> None:
    """A 2-layer, 32-wide BERT with a word-level vocabulary (as tests/conftest.py's tiny_bert, without its
    duplicate entries); `extra_rows` pads the embedding matrix beyond the tokenizer, as many real models do."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder.mkdir(parents=True)
    words = {w for s in SUBJECTS + VERBS + OBJECTS for w in s.replace(".", " .").split()}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    vocab = list(dict.fromkeys(vocab + sorted(words) + list("abcdefghijklmnopqrstuvwxyz.,")))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab) + extra_rows,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------------------------
# Sources: every shipped config, made runnable offline in seconds


@dataclass
class Source:
    name: str  # e.g. demo/sentiment
    path: str  # the shipped file (or, for derived sources, what it derives from)
    task: str
    train_cmd: str  # finetune | pretrain
    config: dict[str, Any]  # runnable: paths relative to cfg/, tiny sizes, 2 steps
    original: str  # the shipped text
    checkpoint: str | None = None  # checkpoints/step-N of its base run, relative to the run
    trained: bool = False  # its base run finished (exit 0)
    result: dict[str, Any] | None = None  # how its base run went

    @property
    def lm(self) -> bool:
        return self.task != "classification"

    @property
    def commands(self) -> list[str]:
        return [self.train_cmd, "evaluate", "predict", "validate"]


def dset(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[parts[-1]] = value


def dget(tree: Any, key: str, default: Any = None) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def ddel(tree: dict[str, Any], key: str) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        tree = tree.get(part) if isinstance(tree.get(part), dict) else {}
    tree.pop(parts[-1], None)


def runnable(cfg: dict[str, Any]) -> dict[str, Any]:
    """A shipped config, shrunk to a few seconds on a CPU and pointed at the generated files."""
    c = copy.deepcopy(cfg)
    task = c.get("task", "classification")
    c["output_dir"], c["device"], c["precision"] = "run", "cpu", "fp32"
    m = c.setdefault("model", {})
    if m.get("architecture"):
        m.update(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
        for k in ("num_kv_heads", "max_position_embeddings"):
            m.pop(k, None)
    else:
        m["name_or_path"] = "models/tiny-bert"
        m.pop("revision", None)
    tok = c.setdefault("tokenizer", {})
    tok["max_length"] = min(int(tok.get("max_length", 128)), 32)
    if tok.get("type") == "wordpiece":
        tok["vocab_size"] = 200
    elif tok.get("type") == "bpe":
        tok["vocab_size"] = 300
    d = c.setdefault("data", {})
    t = c.setdefault("training", {})
    p = c.setdefault("predict", {})
    if task == "classification":
        if d.get("dataset"):
            for k in ("dataset", "dataset_config", "train_split", "validation_split"):
                d.pop(k, None)
            d["train"], d["validation"] = "data/pairs_train.csv", "data/pairs_validation.csv"
        elif str(d.get("train", "")).endswith(".tsv"):
            d["train"], d["validation"] = "data/train.tsv", "data/dev.tsv"
        else:
            d["train"], d["validation"] = "data/train.csv", "data/validation.csv"
        p["input"] = "data/texts.txt"
        t["batch_size"] = 8
    else:
        train = d.get("train")
        if isinstance(train, list):
            d["train"] = ["data/corpus.txt", "data/corpus2.txt"]
        elif glob.has_magic(str(train)):
            d["train"] = "data/corpus/*.txt"
        else:
            d["train"] = "data/corpus.txt"
        if d.get("validation"):
            d["validation"] = "data/valid.txt"
        if d.get("streaming"):
            d["shuffle_buffer"] = 64
        d["cache_dir"] = "cache"
        p["input"] = "data/prompts.txt" if task == "clm" else "data/masked.txt"
        p["max_new_tokens"] = 4
        t["batch_size"] = 4
    t.pop("epochs", None)
    t.update(max_steps=2, eval_batch_size=16, eval_every=2, log_every=1)
    if int(t.get("gradient_accumulation_steps", 1)) > 2:
        t["gradient_accumulation_steps"] = 2
    if "warmup_steps" in t:
        t["warmup_steps"] = 1
    return c


def load_sources() -> list[Source]:
    sources = []
    for path in sorted((REPO / "configs").rglob("*.y*ml")):
        text = path.read_text(encoding="utf-8")
        cfg = yaml.safe_load(text)
        task = cfg.get("task", "classification")
        cmd = "finetune" if task == "classification" else "pretrain"
        name = str(path.relative_to(REPO / "configs").with_suffix(""))
        sources.append(Source(name, str(path.relative_to(REPO)), task, cmd, runnable(cfg), text))
    # Two more ways in: continued masked-LM pretraining of a pretrained encoder, and causal-LM
    # fine-tuning of a pretrained decoder (the tiny GPT a shipped config's base run trains).
    mlm = next(s for s in sources if s.task == "mlm")
    cont = copy.deepcopy(mlm.config)
    cont["model"] = {"name_or_path": "models/tiny-bert"}
    cont["tokenizer"] = {"max_length": 32}
    dset(cont, "objective.whole_word_masking", False)  # the tiny BERT's vocabulary has whole words only
    sources.append(Source("derived/mlm-continue", mlm.path, "mlm", "pretrain", cont, mlm.original))
    clm = next(s for s in sources if s.task == "clm" and dget(s.config, "tokenizer.type") == "char")
    ft = copy.deepcopy(clm.config)
    ft["model"] = {"name_or_path": "models/tiny-gpt"}
    ft["tokenizer"] = {"max_length": 32}
    sources.append(Source("derived/clm-finetune", clm.path, "clm", "finetune", ft, clm.original))
    return sources


# --------------------------------------------------------------------------------------------
# Cases


class Raw(str):
    """A YAML snippet written into the config as it is (anchors, tags, odd scalars)."""


@dataclass
class Case:
    id: int
    family: str
    desc: str
    source: str
    command: str
    args: list[str] = field(default_factory=list)  # after `--config CONFIG`
    config: bytes | None = None  # None: no config file is written
    config_rel: str = CFG
    ops: list[list[Any]] = field(default_factory=list)  # file operations after the kit is copied
    runs: list[list[str]] = field(default_factory=list)  # [source, folder under cfg/]: base runs copied in
    expect: str = "any"  # "error": input that must not be accepted

    def argv(self) -> list[str]:
        return [self.command, "--config", self.config_rel, *self.args]


def dump(cfg: dict[str, Any], header: str = "") -> bytes:
    """YAML text of a case config; Raw values are pasted in as they are."""
    raws: list[str] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(str(node))
            return f"RAW{len(raws) - 1}RAW"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = yaml.safe_dump(swap(cfg), sort_keys=False, allow_unicode=True, width=10**9)
    for i, raw in enumerate(raws):
        text = re.sub(rf"'?RAW{i}RAW'?", lambda _m, raw=raw: raw, text, count=1)
    return (header + text).encode("utf-8", "surrogateescape")


def flow(value: Any) -> str:
    """A value as --set writes it (a YAML flow scalar or collection)."""
    if isinstance(value, Raw):
        return str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


class Builder:
    """Makes cases: a source's runnable config, edits, ops and a command."""

    def __init__(self, sources: list[Source], rng: random.Random):
        self.sources = sources
        self.by_name = {s.name: s for s in sources}
        self.rng = rng
        self.cases: list[Case] = []

    def src(self, pred: Callable[[Source], bool] = lambda s: True) -> Source:
        return self.rng.choice([s for s in self.sources if pred(s)])

    def case(
        self,
        family: str,
        desc: str,
        src: Source,
        command: str | None = None,
        *,
        cfg: dict[str, Any] | None = None,
        text: bytes | None = None,
        args: Iterable[str] = (),
        ops: Iterable[list[Any]] = (),
        runs: Iterable[list[str]] | None = None,
        expect: str = "any",
        config_rel: str = CFG,
        no_config: bool = False,
    ) -> Case:
        command = command or src.train_cmd
        if runs is None:  # evaluate and predict need a trained model: copy the source's base run in
            runs = [[src.name, "run"]] if command in ("evaluate", "predict") else []
        if text is None and not no_config:
            text = dump(cfg if cfg is not None else src.config)
        c = Case(
            0,
            family,
            desc,
            src.name,
            command,
            list(args),
            text,
            config_rel,
            [list(o) for o in ops],
            [list(r) for r in runs],
            expect,
        )
        self.cases.append(c)
        return c

    def cfg(self, src: Source) -> dict[str, Any]:
        return copy.deepcopy(src.config)

    def command(self, src: Source, train: float = 0.6, validate: float = 0.25) -> str:
        r = self.rng.random()
        if r < train:
            return src.train_cmd
        if r < train + validate:
            return "validate"
        return self.rng.choice(["evaluate", "predict"])


def schema_rows() -> list[tuple[str, str, Any]]:
    sys.path.insert(0, str(REPO))
    from ptft_cli.config import reference

    return [(k, t, d) for k, t, d, _ in reference()]


def wrong_values(tp: str, default: Any) -> list[tuple[str, Any]]:
    """Values of the wrong type for a schema type name (`integer or null`, `a | b | c`, ...)."""
    nullable = tp.endswith(" or null")
    base = tp[: -len(" or null")] if nullable else tp
    null = [] if nullable else [("null", None)]
    date = ("a date", Raw("2024-01-31"))
    if base == "integer":
        vals = [
            ("a word", "sixteen"),
            ("a list", [1, 2]),
            ("a mapping", {"n": 1}),
            ("a bool", True),
            ("a fraction", 1.5),
            ("a numeric string", "8"),
            ("an empty string", ""),
            date,
        ]
    elif base == "number":
        vals = [
            ("a word", "fast"),
            ("a list", [0.1]),
            ("a bool", False),
            ("a mapping", {"x": 1}),
            date,
            ("a hex string", "0x10"),
            ("a string with units", "1e-3 per step"),
        ]
    elif base == "string":
        vals = [
            ("a list", ["a", "b"]),
            ("a mapping", {"a": "b"}),
            ("a bool", True),
            ("an empty string", ""),
            ("a blank string", "   "),
            date,
            ("binary", Raw("!!binary aGVsbG8=")),
        ]
    elif base == "true/false":
        vals = [
            ("a word", "maybe"),
            ("an integer", 1),
            ("a quoted yes", "yes"),
            ("a list", [True]),
            ("a float", 0.0),
        ]
    elif base.startswith("mapping"):
        vals = [
            ("a string", "pad"),
            ("a list", ["[PAD]"]),
            ("a nested mapping", {"pad": {"x": 1}}),
            ("a null value", {"pad": None}),
            ("an empty value", {"pad": ""}),
            ("a list value", {"pad": [1]}),
        ]
    elif base == "string or list of string":
        vals = [
            ("a mapping", {"a": "b"}),
            ("a nested list", [["a"]]),
            ("an empty list", []),
            ("a bool", True),
            ("a list with null", [None]),
            ("a list with a mapping", [{"a": 1}]),
        ]
    elif base == "list of string":
        vals = [
            ("a comma string", "negative,positive"),
            ("a nested list", [["a"], ["b"]]),
            ("a mapping", {"a": "b"}),
            ("an empty list", []),
            ("a list with null", ["a", None]),
            ("a list with a bool", [True, False]),
        ]
    elif base == "list of number":
        vals = [
            ("a string", "0.9, 0.99"),
            ("words", ["a", "b"]),
            ("one number", [0.9]),
            ("three numbers", [0.9, 0.99, 0.999]),
            ("an empty list", []),
            ("a scalar", 0.9),
            ("a list with null", [0.9, None]),
        ]
    elif base in ("integer or epoch", "integer or eval"):
        word = base.split()[-1]
        vals = [
            ("a near word", word + "s"),
            ("a fraction", 1.5),
            ("a list", [1]),
            ("a bool", True),
            ("upper case", word.upper()),
        ]
    elif "|" in base:
        choices = [c.strip() for c in base.split("|")]
        first = choices[0]
        vals = [
            ("wrong case", first.upper()),
            ("an integer", 3),
            ("a list", [first]),
            ("an empty string", ""),
            ("trailing space", first + " "),
            ("a near miss", first[:-1]),
            ("a mapping", {first: True}),
        ]
    else:
        vals = [("a list", [1]), ("a mapping", {"a": 1})]
    return vals + null


NUMERIC = ("integer", "number", "list of number", "integer or epoch", "integer or eval")
# Keys whose huge values legitimately mean hours of work: huge values only go to `validate`.
LOOP_KEYS = {
    "training.max_steps",
    "training.epochs",
    "training.gradient_accumulation_steps",
    "predict.max_new_tokens",
    "model.num_layers",
}
RANGE_VALUES: list[tuple[str, Any]] = [
    ("negative", -1),
    ("zero", 0),
    ("negative zero", -0.0),
    ("1e30", 1e30),
    ("-1e30", -1e30),
    (".inf", math.inf),
    ("-.inf", -math.inf),
    (".nan", math.nan),
    ("2**64+1", 2**64 + 1),
    ("-2**63-1", -(2**63) - 1),
    ("10**400", 10**400),
    ("1e400 (a string PyYAML leaves unparsed)", Raw("1e400")),
    ("a denormal", 5e-324),
    ("a fraction", 0.5),
    ("just over 1", 1.0000001),
]
# Valid but extreme values that do run: they must train, or stop with a clear error.
EXTREMES: list[
    tuple[str, Any, str]
] = [  # key, value, which sources ("lm", "clf", "mlm", "clm", "new", "any")
    ("objective.mlm_probability", 1.0, "mlm"),
    ("objective.mlm_probability", 1e-9, "mlm"),
    ("objective.mask_replace_ratio", 0.0, "mlm"),
    ("objective.random_replace_ratio", 0.2, "mlm"),
    ("objective.nsp_random_ratio", 1.0, "mlm"),
    ("tokenizer.max_length", 2, "any"),
    ("tokenizer.max_length", 1, "any"),
    ("tokenizer.vocab_size", 1, "new"),
    ("tokenizer.min_frequency", 1000000, "new"),
    ("data.validation_fraction", 0.999, "any"),
    ("data.validation_fraction", 0.0, "any"),
    ("data.max_train_samples", 1, "any"),
    ("data.max_eval_samples", 1, "any"),
    ("data.shuffle_buffer", 1, "lm"),
    ("training.batch_size", 1, "any"),
    ("training.batch_size", 100000, "any"),
    ("training.eval_batch_size", 1, "any"),
    ("training.learning_rate", 1e-300, "any"),
    ("training.learning_rate", 1e30, "any"),
    ("training.max_grad_norm", 1e-30, "any"),
    ("training.label_smoothing", 1.0, "clf"),
    ("training.warmup_ratio", 1.0, "any"),
    ("training.keep_checkpoints", 0, "any"),
    ("training.adam_epsilon", 1e-300, "any"),
    ("training.weight_decay", 1e10, "any"),
    ("model.dropout", 1.0, "any"),
    ("model.hidden_size", 8, "new"),
    ("model.hidden_size", 10**12, "new"),
    ("model.intermediate_size", 10**15, "new"),
    ("model.max_position_embeddings", 10**13, "new"),
    ("model.num_layers", 1, "new"),
    ("model.train_top_k_layers", 100, "any"),
    ("model.train_top_k_layers", 0, "any"),
    ("seed", -1, "any"),
    ("seed", 2**64 + 1, "any"),
    ("seed", 2**32, "any"),
    ("training.batch_size", 10**30, "any"),
    ("data.max_train_samples", 0, "any"),
    ("tokenizer.vocab_size", 10**30, "new"),
    ("tokenizer.max_length", 10**30, "any"),
]
# (key, value) for predict: run on a trained language model with do_sample true
SAMPLING: list[tuple[str, Any]] = [
    ("predict.temperature", 0.0),
    ("predict.temperature", 1e-30),
    ("predict.temperature", 1e30),
    ("predict.temperature", math.inf),
    ("predict.temperature", math.nan),
    ("predict.temperature", -1.0),
    ("predict.top_k", 0),
    ("predict.top_k", 1),
    ("predict.top_k", 10**30),
    ("predict.top_k", -1),
    ("predict.top_p", 0.0),
    ("predict.top_p", 1e-30),
    ("predict.top_p", 1.5),
    ("predict.top_p", math.nan),
    ("predict.max_new_tokens", 0),
    ("predict.max_new_tokens", -1),
    ("predict.max_new_tokens", 200),
]


def take(items: list[Any], n: int, rng: random.Random) -> list[Any]:
    """n items: every item once (shuffled) while n allows, then again."""
    out: list[Any] = []
    while len(out) < n and items:
        batch = items[:]
        rng.shuffle(batch)
        out += batch[: n - len(out)]
    return out


def is_src(s: Source, kind: str) -> bool:
    new = bool(dget(s.config, "model.architecture"))
    return {
        "any": True,
        "lm": s.lm,
        "clf": not s.lm,
        "mlm": s.task.startswith("mlm"),
        "clm": s.task == "clm",
        "new": new,
    }[kind]


# ---------------- wrong types


def gen_wrong_type(b: Builder, n: int) -> None:
    rows = schema_rows()
    first, rest = [], []
    for i, (key, tp, default) in enumerate(rows):
        vals = wrong_values(tp, default)
        first.append((key, vals[i % len(vals)]))
        rest += [(key, v) for j, v in enumerate(vals) if j != i % len(vals)]
    sections = ["model", "tokenizer", "data", "objective", "training", "evaluate", "predict"]
    section_vals = [("a scalar", 5), ("a list", ["a"]), ("a string", "yes please"), ("an empty list", [])]
    first += [(s, section_vals[i % len(section_vals)]) for i, s in enumerate(sections)]
    rest += [(s, v) for s in sections for v in section_vals]
    picked = first[:n] if n <= len(first) else first + take(rest, n - len(first), b.rng)
    for key, (what, value) in picked:
        src = b.src()
        cmd = b.command(src)
        if b.rng.random() < 0.3:
            b.case(
                "wrong-type",
                f"{key} = {what} (--set)",
                src,
                cmd,
                args=["--set", f"{key}={flow(value)}"],
                expect="error",
            )
        else:
            cfg = b.cfg(src)
            dset(cfg, key, value)
            b.case("wrong-type", f"{key} = {what}", src, cmd, cfg=cfg, expect="error")


# ---------------- ranges


def gen_range(b: Builder, n: int) -> None:
    rows = [(k, t) for k, t, _ in schema_rows() if t.removesuffix(" or null") in NUMERIC]
    combos = [(k, t, v) for k, t in rows for v in RANGE_VALUES]
    n_extreme = min(len(EXTREMES), int(n * 0.4))
    n_sampling = min(len(SAMPLING), n // 8)
    n_plain = n - n_extreme - n_sampling
    first = [(k, t, RANGE_VALUES[i % len(RANGE_VALUES)]) for i, (k, t) in enumerate(rows)]
    picked = first[:n_plain] if n_plain <= len(first) else first + take(combos, n_plain - len(first), b.rng)
    for key, tp, (what, value) in picked:
        if tp.startswith("list of number"):
            value = [value, 0.99] if b.rng.random() < 0.5 else [0.9, value]
        src = b.src()
        huge = isinstance(value, (int, float)) and value > 1e6
        if key in LOOP_KEYS and (huge or isinstance(value, Raw)):
            cmd = "validate"
        elif key.startswith(("predict.", "evaluate.")):
            src = b.src(lambda s: s.lm)
            cmd = b.rng.choice(["predict", "predict", "validate"])
        else:
            cmd = b.command(src, 0.45, 0.45)
        cfg = b.cfg(src)
        dset(cfg, key, value)
        if key.startswith("predict."):
            dset(cfg, "predict.do_sample", True)
        b.case("range", f"{key} = {what}", src, cmd, cfg=cfg)
    for key, value, kind in take(EXTREMES, n_extreme, b.rng):
        src = b.src(lambda s, kind=kind: is_src(s, kind))
        cfg = b.cfg(src)
        dset(cfg, key, value)
        if key == "training.learning_rate" and value < 1:
            dset(cfg, "training.min_learning_rate", 0.0)
        if key == "data.validation_fraction":
            ddel(cfg, "data.validation")
        b.case("range", f"{key} = {value!r} (valid extreme)", src, src.train_cmd, cfg=cfg)
    for key, value in take(SAMPLING, n_sampling, b.rng):
        src = b.src(lambda s: s.task == "clm")
        cfg = b.cfg(src)
        dset(cfg, key, value)
        dset(cfg, "predict.do_sample", True)
        b.case("range", f"{key} = {value!r} (sampling)", src, "predict", cfg=cfg)


# ---------------- YAML oddities


def bomb_list(levels: int = 9, width: int = 9) -> str:
    parts = ["&a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


def bomb_map(levels: int = 9, width: int = 9) -> str:
    parts = ["&m0 {" + ", ".join(f"k{j}: lol" for j in range(width)) + "}"]
    for i in range(1, levels):
        parts.append(f"&m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(width)) + "}")
    return "{" + ", ".join(f"d{i}: {p}" for i, p in enumerate(parts)) + "}"


def nested(depth: int, kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + "x" + "]" * depth
    return "{a: " * depth + "x" + "}" * depth


def gen_yaml(b: Builder, n: int) -> None:
    T: list[Callable[[Source], None]] = []

    def text_case(
        desc: str, make: Callable[[bytes], bytes], expect: str = "any", cmd: str | None = None
    ) -> None:
        def run(src: Source) -> None:
            b.case(
                "yaml",
                desc,
                src,
                cmd or b.command(src, 0.4, 0.6),
                text=make(dump(src.config)),
                expect=expect,
            )

        T.append(run)

    def raw_at(
        desc: str, key: str | Callable[[Source], str], raw: str, prefix: str = "", expect: str = "error"
    ) -> None:
        def run(src: Source) -> None:
            k = key(src) if callable(key) else key
            cfg = b.cfg(src)
            dset(cfg, k, Raw(raw))
            b.case(
                "yaml",
                f"{desc} at {k}",
                src,
                b.command(src, 0.4, 0.6),
                text=prefix.encode() + dump(cfg),
                expect=expect,
            )

        T.append(run)

    def str_key(src: Source) -> str:
        return b.rng.choice(
            [
                "task",
                "output_dir",
                "device",
                "data.text_column",
                "model.name_or_path" if not src.lm else "data.train",
            ]
        )

    # alias bombs: anchors defined in an unknown top-level key, used at a real key
    for key in [
        "task",
        "output_dir",
        "data.labels",
        "training.adam_betas",
        "tokenizer.special_tokens",
        "data.train",
        "model",
    ]:
        raw_at("list alias bomb (9**9 elements)", key, "*a8", prefix=f"x_anchors: {bomb_list()}\n")
    for key in ["task", "tokenizer.special_tokens", "training", "predict.prompt", "data.labels"]:
        raw_at("mapping alias bomb", key, "*m8", prefix=f"x_anchors: {bomb_map()}\n")
    raw_at("list alias bomb defined in place", "data.labels", bomb_list())
    raw_at("mapping alias bomb defined in place", "tokenizer.special_tokens", bomb_map())
    text_case(
        "alias bomb as an unknown top-level key", lambda t: f"x_bomb: {bomb_map()}\n".encode() + t, "error"
    )
    text_case(
        "alias bomb under an unknown nested key",
        lambda t: t.replace(b"training:\n", f"training:\n  x_bomb: {bomb_list()}\n".encode(), 1),
        "error",
    )
    # recursive aliases
    raw_at("recursive list alias", "data.labels", "&r [negative, *r]")
    raw_at("recursive list alias", "data.train", "&r [data/train.csv, *r]")
    raw_at("recursive mapping alias", "tokenizer.special_tokens", "&r {pad: '[PAD]', me: *r}")
    raw_at("recursive mapping alias", "training.adam_betas", "&r {a: *r}")
    text_case(
        "recursive section alias",
        lambda t: t.replace(b"training:\n", b"training: &t\n  inner: *t\n", 1),
        "error",
    )
    text_case("recursive top-level alias", lambda t: b"&top\nself: *top\n" + t, "error")
    text_case(
        "recursive alias through a list",
        lambda t: t.replace(b"data:\n", b"data: &d\n  more: [*d]\n", 1),
        "error",
    )
    # deep nesting
    for depth in (100, 1000, 10000, 50000):
        raw_at(f"list nested {depth} deep", str_key, nested(depth))
    for depth in (1000, 20000):
        raw_at(f"mapping nested {depth} deep", "tokenizer.special_tokens", nested(depth, "map"))
        text_case(
            f"unknown key holding a mapping nested {depth} deep",
            lambda t, d=depth: f"deep: {nested(d, 'map')}\n".encode() + t,
            "error",
        )
    text_case(
        "block mappings nested 3000 deep",
        lambda t: t + "".join(" " * i + f"k{i}:\n" for i in range(3000)).encode() + b" " * 3000 + b"x\n",
        "error",
    )
    # duplicate keys
    text_case("duplicate top-level key", lambda t: t + b"seed: 7\n", "error")
    text_case(
        "duplicate nested key",
        lambda t: t.replace(b"training:\n", b"training:\n  max_steps: 5\n", 1),
        "error",
    )
    text_case("duplicate section", lambda t: t + b"training:\n  log_every: 3\n", "error")
    text_case("duplicate key in a flow mapping", lambda t: t + b"evaluate: {model: a, model: b}\n", "error")
    # whitespace and encodings
    text_case("tab indentation", lambda t: t.replace(b"\n  ", b"\n\t", 3), "error")
    text_case("tab after the colon", lambda t: t.replace(b": ", b":\t", 5))
    text_case(
        "non-UTF-8 byte in a value",
        lambda t: t.replace(b"output_dir: run", b"output_dir: r\xe9n", 1),
        "error",
    )
    text_case("non-UTF-8 byte in a comment", lambda t: b"# caf\xe9 config\n" + t, "error")
    text_case("0xff 0xfe at the start", lambda t: b"\xff\xfe" + t, "error")
    text_case("overlong UTF-8", lambda t: b"# \xc0\xaf\n" + t, "error")
    text_case(
        "UTF-8 surrogate bytes",
        lambda t: t.replace(b"output_dir: run", b"output_dir: \xed\xa0\x80", 1),
        "error",
    )
    text_case("UTF-8 BOM", lambda t: b"\xef\xbb\xbf" + t)
    text_case("BOM inside a key", lambda t: t.replace(b"task:", "\ufefftask:".encode(), 1), "error")
    text_case("UTF-16 with BOM", lambda t: t.decode().encode("utf-16"), "error")
    text_case("UTF-16-BE without BOM", lambda t: t.decode().encode("utf-16-be"), "error")
    text_case("NUL byte", lambda t: t.replace(b"\n", b"\n\x00", 1), "error")
    text_case(
        "control character in a value",
        lambda t: t.replace(b"output_dir: run", b"output_dir: ru\x07n", 1),
        "error",
    )
    text_case(
        "escape character in a value", lambda t: t.replace(b"output_dir: run", b'output_dir: "ru\\e[31mn"', 1)
    )
    text_case("CR-only line ends", lambda t: t.replace(b"\n", b"\r"))
    text_case("CRLF line ends", lambda t: t.replace(b"\n", b"\r\n"))
    text_case("unicode line separators", lambda t: t.replace(b"\n", "\u2028".encode(), 4))
    text_case("NEL line ends", lambda t: t.replace(b"\n", "\x85".encode()))
    # empty and odd documents
    for desc, content in [
        ("empty file", b""),
        ("whitespace only", b"  \n\n\t\n"),
        ("comments only", b"# nothing here\n# at all\n"),
        ("a lone document marker", b"---\n"),
        ("an end marker only", b"...\n"),
        ("null document", b"~\n"),
        ("a list at top level", b"- task: classification\n- output_dir: run\n"),
        ("a scalar at top level", b"classification\n"),
        ("a number at top level", b"1e400\n"),
        ("a quoted string at top level", b"'task: classification'\n"),
        ("a bool at top level", b"true\n"),
        ("an empty mapping", b"{}\n"),
    ]:
        text_case(desc, lambda _t, c=content: c, "error")
    text_case("two documents", lambda t: t + b"---\ntask: classification\n", "error")
    text_case("a %YAML 1.2 directive", lambda t: b"%YAML 1.2\n---\n" + t)
    text_case("a %YAML 9.9 directive", lambda t: b"%YAML 9.9\n---\n" + t, "error")
    text_case("a %TAG directive", lambda t: b"%TAG !e! tag:example.com,2000:\n---\n" + t)
    text_case("undefined alias", lambda t: t + b"seed: *nowhere\n", "error")
    text_case("anchor redefined", lambda t: t + b"x1: &a 1\nx2: &a 2\nx3: *a\n", "error")
    text_case("unclosed flow list", lambda t: t + b"predict: [unclosed\n", "error")
    text_case("unclosed quote", lambda t: t + b"seed: 'seven\n", "error")
    text_case(
        "2 MB value", lambda t: t.replace(b"output_dir: run", b"output_dir: " + b"r" * 2_000_000, 1), "error"
    )
    text_case("2 MB key", lambda t: t + b"k" * 2_000_000 + b": 1\n", "error")
    text_case(
        "3,000 unknown keys",
        lambda t: t + "".join(f"unknown_key_{i}: {i}\n" for i in range(3000)).encode(),
        "error",
    )
    text_case(
        "300 unknown training keys",
        lambda t: t.replace(
            b"training:\n",
            b"training:\n" + "".join(f"  learnig_rate_{i}: 1\n" for i in range(300)).encode(),
            1,
        ),
        "error",
    )
    # odd keys
    text_case("an integer key", lambda t: t + b"1: one\n", "error")
    text_case("a null key", lambda t: t + b"~: nothing\n", "error")
    text_case("a bool key (on)", lambda t: t + b"on: yes\n", "error")
    text_case("a list key", lambda t: t + b"? [a, b]\n: c\n", "error")
    text_case("a mapping key", lambda t: t + b"? {a: 1}\n: c\n", "error")
    text_case(
        "a float key in a section", lambda t: t.replace(b"training:\n", b"training:\n  0.5: x\n", 1), "error"
    )
    text_case("a dotted key", lambda t: t + b"training.learning_rate: 0.1\n", "error")
    text_case("an emoji key", lambda t: t + "\U0001f525: hot\n".encode(), "error")
    text_case("an empty key", lambda t: t + b"'': x\n", "error")
    text_case(
        "merge key",
        lambda t: (
            b"x_base: &base {batch_size: 4}\n" + t.replace(b"training:\n", b"training:\n  <<: *base\n", 1)
        ),
        "error",
    )
    text_case(
        "merge of a non-mapping",
        lambda t: t.replace(b"training:\n", b"training:\n  <<: [1, 2]\n", 1),
        "error",
    )
    text_case(
        "anchored section reused",
        lambda t: t.replace(b"evaluate:", b"x_unused:", 1) + b"evaluate: &e {}\npredict: *e\n",
        "error",
    )
    # tags and YAML 1.1 surprises
    marker = "PWNED-yaml"
    raw_at(
        "!!python/object/apply:os.system (must never run)",
        str_key,
        f'!!python/object/apply:os.system ["touch {marker}"]',
    )
    text_case(
        "!!python/object/apply at top level (must never run)",
        lambda _t: f'!!python/object/apply:os.system ["touch {marker}"]\n'.encode(),
        "error",
    )
    raw_at("!!python/name:os.system", str_key, "!!python/name:os.system")
    raw_at(
        "!!python/object/new:subprocess.Popen (must never run)",
        "data.labels",
        f"!!python/object/new:subprocess.Popen [[touch, {marker}]]",
    )
    raw_at("!!python/module:os", "model", "!!python/module:os")
    raw_at("!!binary", str_key, "!!binary aGVsbG8=")
    raw_at("!!set", "data.labels", "!!set {negative, positive}")
    raw_at("!!omap", "tokenizer.special_tokens", "!!omap [pad: '[PAD]', unk: '[UNK]']")
    raw_at("!!pairs", "training", "!!pairs [max_steps: 2, max_steps: 3]")
    raw_at("!!timestamp", "output_dir", "!!timestamp 2001-12-14t21:59:43.10-05:00")
    raw_at("unknown tag", str_key, "!shout hello")
    raw_at("unknown tag on a section", "training", "!section {max_steps: 2}")
    raw_at("!!float on a word", "training.learning_rate", "!!float fast")
    raw_at("!!int hex", "seed", "!!int 0x1F", expect="any")
    raw_at("sexagesimal integer", "seed", "190:20:30", expect="any")
    raw_at("YAML 1.1 octal", "training.log_every", "0o17", expect="any")
    raw_at("underscored integer", "training.log_every", "1_0", expect="any")
    raw_at("unquoted no", "output_dir", "no")
    raw_at("unquoted off", "data.text_column", "off")
    raw_at("unquoted null word", "output_dir", "Null")
    raw_at("a quoted NaN", "training.learning_rate", "'nan'")
    raw_at("a quoted inf", "training.learning_rate", "'inf'", expect="any")
    raw_at("infinity word", "training.learning_rate", "infinity", expect="any")
    raw_at("a folded block scalar", "output_dir", ">\n  run\n  two", expect="any")
    raw_at("a literal block with trailing newline", "data.text_column", "|\n    text\n", expect="any")
    for make in take(T, n, b.rng):
        make(b.src())


# ---------------- data damage


def cut_in_utf8(data: bytes) -> bytes:
    i = data.find("é".encode())
    return data[: i + 1] if i >= 0 else data[: len(data) // 2]


def gen_bytes(kind: str, size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if kind == "junk":
        return rng.randbytes(size)
    if kind == "deep-json":
        return b"[" * size + b"]" * size
    if kind == "deep-jsonl":
        return (
            b'{"text": "ok", "label": "positive"}\n{"text": '
            + b"[" * size
            + b"]" * size
            + b', "label": "negative"}\n'
        )
    raise ValueError(kind)


def gen_data(b: Builder, n: int) -> None:
    T: list[Callable[[], None]] = []

    def clf_target(src: Source, which: str) -> tuple[str, str]:
        """(config key, file under cfg/) of a classification source's training or validation file."""
        return f"data.{which}", str(dget(src.config, f"data.{which}"))

    def damage(desc: str, fn: Callable[[bytes], bytes], kinds: str = "clf", expect: str = "any") -> None:
        """Rewrite a data file's bytes (training or validation file of any source, or predict input)."""

        def run() -> None:
            src = b.src(lambda s: is_src(s, kinds))
            which = (
                b.rng.choice(["train", "train", "validation"])
                if dget(src.config, "data.validation")
                else "train"
            )
            key, rel = clf_target(src, which)
            if rel.startswith("["):
                rel = dget(src.config, key)[0]
            if glob.has_magic(rel):
                rel = "data/corpus/a.txt"
            cmd = b.command(src, 0.45, 0.45)
            if cmd in ("evaluate", "predict") and which == "train":
                cmd = src.train_cmd
            content = (REPO_DATA / rel.removeprefix("data/")).read_bytes()
            b.case(
                "data",
                f"{which} file ({Path(rel).name}): {desc}",
                src,
                cmd,
                ops=[["write", rel, fn(content)]],
                expect=expect,
            )

        T.append(run)

    def structural(
        desc: str,
        make: Callable[[Source, dict[str, Any]], list[list[Any]]],
        kinds: str = "any",
        cmd: str | None = None,
        expect: str = "error",
    ) -> None:
        def run() -> None:
            src = b.src(lambda s: is_src(s, kinds))
            cfg = b.cfg(src)
            ops = make(src, cfg)
            b.case("data", desc, src, cmd or b.command(src, 0.5, 0.5), cfg=cfg, ops=ops, expect=expect)

        T.append(run)

    # -- byte-level damage of csv/tsv/txt files (training or validation)
    damage("truncated mid-row", lambda d: d[: len(d) * 2 // 3], "any")
    damage("truncated to 10 bytes", lambda d: d[:10], "any")
    damage(
        "truncated mid-UTF-8 character", lambda d: cut_in_utf8(d.replace(b"film", "café".encode(), 3)), "any"
    )
    damage("zero bytes", lambda d: b"", "any", "error")
    damage("whitespace and newlines only", lambda d: b"\n \n\t\n\n", "any", "error")
    damage("header only", lambda d: d.split(b"\n")[0] + b"\n", "clf", "error")
    damage("no trailing newline, one line", lambda d: d.split(b"\n")[0], "any")
    damage(
        "text column renamed",
        lambda d: d.replace(b"text", b"review", 1).replace(b"sentence", b"phrase", 1),
        "clf",
        "error",
    )
    damage("label column renamed", lambda d: d.replace(b"label", b"sentiment", 1), "clf", "error")
    damage("header with a BOM", lambda d: b"\xef\xbb\xbf" + d, "any")
    damage("UTF-16 encoded", lambda d: d.decode().encode("utf-16"), "any", "error")
    damage("a latin-1 byte in a row", lambda d: d.replace(b" the ", b" caf\xe9 ", 1), "any", "error")
    damage("binary junk (4 KB)", lambda d: gen_bytes("junk", 4096, 1), "any", "error")
    damage(
        "binary junk after the header",
        lambda d: d.split(b"\n")[0] + b"\n" + gen_bytes("junk", 2048, 2),
        "any",
        "error",
    )
    damage("NUL bytes inside a row", lambda d: d.replace(b" ", b"\x00", 5), "any")
    damage("empty rows between rows", lambda d: d.replace(b"\n", b"\n\n\n"), "any")
    damage("rows of only delimiters", lambda d: d + b",\n,,\n\t\n", "clf", "error")
    damage("a row with an extra field", lambda d: d + b"one,two,three,positive\n", "clf", "error")
    damage("a row with a missing field", lambda d: d + b"lonely\n", "clf", "error")
    damage("an unclosed quote", lambda d: d + b'"unclosed, positive\nmore text,negative\n', "clf", "error")
    damage("a quote in the middle of a field", lambda d: d + b'half "quoted" text,positive\n', "clf")
    damage("a 2 MB field", lambda d: d + b"long " * 400_000 + b",positive\n", "clf")
    damage("a 2 MB line", lambda d: d + b"long " * 400_000 + b"\n", "lm")
    damage("100,000 empty lines", lambda d: d + b"\n" * 100_000, "any")
    damage("CR-only line ends", lambda d: d.replace(b"\n", b"\r"), "any")
    damage("CRLF line ends", lambda d: d.replace(b"\n", b"\r\n"), "any")
    damage(
        "duplicate header column",
        lambda d: d.replace(b"label", b"text", 1) if d.startswith(b"text") else b"text,text,label\n" + d,
        "clf",
        "error",
    )
    damage("an empty column name", lambda d: d.replace(b"label", b"", 1), "clf", "error")
    damage("label ids out of range", lambda d: d + b"some text,7\nmore text,-1\n", "clf", "error")
    damage("float labels", lambda d: d + b"some text,1.0\n", "clf", "error")
    damage("a label with spaces", lambda d: d + b"some text, positive \n", "clf")
    damage("a label in another case", lambda d: d + b"some text,Positive\n", "clf")
    damage(
        "one class only",
        lambda d: (
            d.replace(b"negative", b"positive")
            .replace(b"\t0\n", b"\t1\n")
            .replace(b",not_equivalent", b",equivalent")
        ),
        "clf",
        "error",
    )
    damage("a single data row", lambda d: b"\n".join(d.split(b"\n")[:2]) + b"\n", "clf")
    damage(
        "emoji, RTL and zero-width text", lambda d: d + "😀 \u202eevil\u200b film,positive\n".encode(), "clf"
    )
    damage("a Ctrl-Z in the middle", lambda d: d.replace(b"\n", b"\n\x1a", 1), "any")
    damage("semicolon delimited", lambda d: d.replace(b",", b";").replace(b"\t", b";"), "clf", "error")
    damage("one character", lambda d: b"a", "lm")
    damage("control characters only", lambda d: bytes(range(1, 32)) * 20, "lm")
    damage("NUL bytes only", lambda d: b"\x00" * 5000, "lm")

    # -- other formats written in place of the training file
    def as_format(
        desc: str,
        name: str,
        content: bytes | list[Any],
        kinds: str = "clf",
        expect: str = "error",
        fmt: str | None = None,
    ) -> None:
        def make(src: Source, cfg: dict[str, Any]) -> list[list[Any]]:
            dset(cfg, "data.train", f"data/{name}")
            if fmt:
                dset(cfg, "data.format", fmt)
            if not src.lm:
                dset(cfg, "data.text_column", "text")
                dset(cfg, "data.label_column", "label")
                ddel(cfg, "data.text_pair_column")
                dset(cfg, "data.labels", ["negative", "positive"])
            return [["write", f"data/{name}", content] if isinstance(content, bytes) else content]

        structural(f"train {name}: {desc}", make, kinds, expect=expect)

    good = REPO_DATA
    jsonl = (good / "train.jsonl").read_bytes()
    as_format("truncated last line", "t.jsonl", jsonl[:-15])
    as_format("a line that is a list", "t.jsonl", jsonl + b'["bad", 0]\n')
    as_format("blank lines", "t.jsonl", jsonl.replace(b"\n", b"\n\n"), expect="any")
    as_format("text null", "t.jsonl", jsonl + b'{"text": null, "label": "positive"}\n')
    as_format("text a number", "t.jsonl", jsonl + b'{"text": 12345, "label": "positive"}\n', expect="any")
    as_format("text a list", "t.jsonl", jsonl + b'{"text": ["a", "b"], "label": "positive"}\n')
    as_format("label a bool", "t.jsonl", jsonl + b'{"text": "fine", "label": true}\n')
    as_format("label a mapping", "t.jsonl", jsonl + b'{"text": "fine", "label": {"a": 1}}\n')
    as_format("label 2**70", "t.jsonl", jsonl + b'{"text": "fine", "label": 1180591620717411303424}\n')
    as_format("a NaN literal", "t.jsonl", jsonl + b'{"text": "fine", "label": NaN}\n')
    as_format(
        "duplicate keys in an object",
        "t.jsonl",
        jsonl + b'{"text": "a", "text": "b", "label": "positive"}\n',
        expect="any",
    )
    as_format("a BOM", "t.jsonl", b"\xef\xbb\xbf" + jsonl, expect="any")
    as_format("a line nested 100,000 deep", "t.jsonl", ["gen", "data/t.jsonl", "deep-jsonl", 100_000])
    as_format("an object, not a list", "t.json", b'{"text": "a", "label": "positive"}')
    as_format("a list of strings", "t.json", b'["a", "b"]')
    as_format("truncated", "t.json", (good / "train.json").read_bytes()[:-40])
    as_format("an empty list", "t.json", b"[]")
    as_format("nested 100,000 deep", "t.json", ["gen", "data/t.json", "deep-json", 100_000])
    as_format(
        "a number 1e400", "t.json", b'[{"text": "a", "label": 1e400}, {"text": "b", "label": "negative"}]'
    )
    parquet = (good / "train.parquet").read_bytes()
    as_format("truncated", "t.parquet", parquet[: len(parquet) // 2])
    as_format("zero bytes", "t.parquet", b"")
    as_format("csv bytes", "t.parquet", (good / "train.csv").read_bytes())
    as_format(
        "text column of integers",
        "t.parquet",
        parquet_bytes({"text": list(range(20)), "label": ["positive", "negative"] * 10}),
        expect="any",
    )
    as_format(
        "float labels", "t.parquet", parquet_bytes({"text": ["a b", "c d"] * 10, "label": [0.5, 1.5] * 10})
    )
    as_format(
        "null texts",
        "t.parquet",
        parquet_bytes({"text": ["a", None] * 10, "label": ["positive", "negative"] * 10}),
    )
    as_format(
        "a list column",
        "t.parquet",
        parquet_bytes({"text": [["a", "b"]] * 10, "label": ["positive", "negative"] * 5}),
    )
    as_format("no rows", "t.parquet", parquet_bytes({"text": [], "label": []}))
    as_format("columns missing", "t.parquet", parquet_bytes({"body": ["a", "b"] * 5}))
    as_format("a csv read as parquet (data.format)", "train.csv", ["noop"], fmt="parquet")
    as_format("a jsonl read as json (data.format)", "train.jsonl", ["noop"], fmt="json")
    as_format("a csv read as tsv (data.format)", "train.csv", ["noop"], fmt="tsv")
    as_format("a csv read as txt (data.format)", "train.csv", ["noop"], fmt="txt")
    as_format("a parquet read as csv (data.format)", "train.parquet", ["noop"], fmt="csv")
    as_format("an unknown extension", "train.xlsx", b"text,label\n")
    as_format("no extension", "train", (good / "train.csv").read_bytes())
    # corpora in other formats
    as_format("jsonl without a text field", "c.jsonl", b'{"body": "hello there"}\n' * 50, "lm")
    as_format("jsonl with null texts", "c.jsonl", b'{"text": null}\n' * 50, "lm")
    as_format("jsonl of numbers", "c.jsonl", b"1\n2\n3\n", "lm")
    as_format("csv with an unclosed quote", "c.csv", b'text\n"never closed\n' + b"more text\n" * 50, "lm")
    as_format("truncated parquet", "c.parquet", (good / "corpus.parquet").read_bytes()[:200], "lm")
    as_format("csv without a text column", "c.csv", b"body\nhello there\n" * 20, "lm")

    # -- kinds of file
    def at_train(
        desc: str,
        ops: Callable[[str], list[list[Any]]],
        kinds: str = "any",
        value: str | None = None,
        expect: str = "error",
    ) -> None:
        def make(src: Source, cfg: dict[str, Any]) -> list[list[Any]]:
            rel = value or "data/x.csv"
            dset(cfg, "data.train", rel)
            return ops(rel)

        structural(f"data.train is {desc}", make, kinds, expect=expect)

    at_train("a directory", lambda r: [["mkdir", r]])
    at_train("a directory of files", lambda r: [["mkdir", r], ["copy", "data/train.csv", r + "/train.csv"]])
    at_train("a FIFO", lambda r: [["fifo", r]])
    at_train("a dangling symlink", lambda r: [["symlink", r, "nowhere.csv"]])
    at_train("a symlink loop", lambda r: [["symlink", r, "y.csv"], ["symlink", "data/y.csv", "x.csv"]])
    at_train("a symlink to the config", lambda r: [["symlink", r, "../config.yaml"]])
    at_train("/dev/null", lambda r: [], value="/dev/null")
    at_train("/dev/zero", lambda r: [], value="/dev/zero")
    at_train("/proc/self/environ", lambda r: [], value="/proc/self/environ")
    at_train(
        "a glob matching directories only", lambda r: [["mkdir", "data/d1.txt"]], "lm", value="data/d*.txt"
    )
    at_train("a glob matching nothing", lambda r: [], value="data/nothing-*.txt")
    at_train("a recursive glob", lambda r: [], "lm", value="data/**/*.txt", expect="any")
    at_train("a glob for classification", lambda r: [], "clf", value="data/*.csv")

    def same_twice(src: Source, cfg: dict[str, Any]) -> list[list[Any]]:
        t = dget(cfg, "data.train")
        t = t[0] if isinstance(t, list) else t
        dset(cfg, "data.train", [t, t])
        return []

    structural("the training file listed twice", same_twice, expect="any")

    def train_is_validation(src: Source, cfg: dict[str, Any]) -> list[list[Any]]:
        t = dget(cfg, "data.train")
        dset(cfg, "data.validation", t[0] if isinstance(t, list) else t)
        return []

    structural("validation is the training file", train_is_validation, expect="any")

    def validation_listed(src: Source, cfg: dict[str, Any]) -> list[list[Any]]:
        v = dget(cfg, "data.validation") or "data/valid.txt"
        dset(cfg, "data.validation", [v, v])
        return []

    structural("validation listed twice", validation_listed, expect="any")

    def tiny_validation(src: Source, cfg: dict[str, Any]) -> list[list[Any]]:
        dset(cfg, "data.validation", "data/tiny.txt")
        return [["write", "data/tiny.txt", b"Hi.\n"]]

    structural("a validation corpus shorter than one block", tiny_validation, "lm", expect="any")

    # -- predict and evaluate inputs
    def predict_input(
        desc: str, name: str, content: bytes | list[Any], kinds: str = "any", expect: str = "any"
    ) -> None:
        def run() -> None:
            src = b.src(lambda s: is_src(s, kinds))
            ops = [["write", f"data/{name}", content] if isinstance(content, bytes) else content]
            b.case(
                "data",
                f"predict --input {name}: {desc}",
                src,
                "predict",
                args=["--input", f"cfg/data/{name}"],
                ops=ops,
                expect=expect,
            )

        T.append(run)

    predict_input("empty", "in.txt", b"", expect="error")
    predict_input("blank lines only", "in.txt", b"\n \n\n", expect="error")
    predict_input("non-UTF-8", "in.txt", b"good film\ncaf\xe9 film\n", expect="error")
    predict_input("NUL bytes", "in.txt", b"good\x00film\n")
    predict_input("a 1 MB line", "in.txt", b"good film " * 100_000 + b"\n")
    predict_input("binary junk", "in.txt", gen_bytes("junk", 4096, 3), expect="error")
    predict_input("a directory", "in.txt", ["mkdir", "data/in.txt"], expect="error")
    predict_input("a FIFO", "in.txt", ["fifo", "data/in.txt"], expect="error")
    predict_input("jsonl without text", "in.jsonl", b'{"body": "x"}\n', expect="error")
    predict_input("jsonl with a null text", "in.jsonl", b'{"text": null}\n', expect="error")
    predict_input("jsonl with duplicate ids", "in.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    predict_input("jsonl id a mapping", "in.jsonl", b'{"id": {"a": 1}, "text": "a"}\n')
    predict_input("csv without text", "in.csv", b"body\nx\n", expect="error")
    predict_input("csv with an unclosed quote", "in.csv", b'text\n"open\n', expect="error")
    predict_input("parquet", "in.parquet", (good / "train.parquet").read_bytes())
    predict_input("tsv", "in.tsv", b"text\ngood film\n")
    predict_input("prompts without a mask", "in.txt", b"the cat liked the garden.\n", "mlm")
    predict_input("a line of 200 masks", "in.txt", b"[MASK] " * 200 + b"\n", "mlm")
    predict_input("a prompt longer than the model's positions", "in.txt", b"The cat " * 200 + b"\n", "clm")
    predict_input("CR-only line ends", "in.txt", b"good film\rbad film\r")

    def eval_data(desc: str, content: bytes, kinds: str = "clf", expect: str = "error") -> None:
        def run() -> None:
            src = b.src(lambda s: is_src(s, kinds))
            cfg = b.cfg(src)
            name = "e.csv" if not src.lm else "e.txt"
            dset(cfg, "evaluate.data", f"data/{name}")
            if not src.lm:
                dset(cfg, "data.text_column", "text")
                dset(cfg, "data.label_column", "label")
                ddel(cfg, "data.text_pair_column")
            b.case(
                "data",
                f"evaluate.data: {desc}",
                src,
                "evaluate",
                cfg=cfg,
                ops=[["write", f"data/{name}", content]],
                expect=expect,
            )

        T.append(run)

    eval_data("labels the model does not know", b"text,label\ngood film,positive\nmeh,neutral\n")
    eval_data("integer labels beyond the model's", b"text,label\ngood film,5\nbad film,0\n")
    eval_data("header only", b"text,label\n")
    eval_data("no label column", b"text\ngood film\n")
    eval_data("a 2 MB text", b"text,label\n" + b"good " * 400_000 + b",positive\n", expect="any")
    eval_data("an empty corpus", b"", "lm")
    eval_data("a corpus of one character", b"a", "lm", expect="any")
    eval_data("binary junk", gen_bytes("junk", 2048, 4), "lm")
    for make in take(T, n, b.rng):
        make()


REPO_DATA = Path()  # set by setup(): the generated data folder cases start from


# ---------------- model and checkpoint damage


def malicious_pickle(marker: str) -> bytes:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Boom(), protocol=2)


MODEL_DAMAGE: list[tuple[str, Callable[[str], list[list[Any]]]]] = [
    ("model.safetensors zero bytes", lambda d: [["write", f"{d}/model.safetensors", b""]]),
    ("model.safetensors truncated", lambda d: [["truncate", f"{d}/model.safetensors", 0.5]]),
    ("model.safetensors 10 bytes", lambda d: [["truncate", f"{d}/model.safetensors", 10]]),
    ("model.safetensors junk", lambda d: [["gen", f"{d}/model.safetensors", "junk", 5000]]),
    (
        "model.safetensors header claims 2**63 bytes",
        lambda d: [["write", f"{d}/model.safetensors", (2**63 - 1).to_bytes(8, "little") + b"{}"]],
    ),
    (
        "model.safetensors a directory",
        lambda d: [["rm", f"{d}/model.safetensors"], ["mkdir", f"{d}/model.safetensors"]],
    ),
    ("model.safetensors missing", lambda d: [["rm", f"{d}/model.safetensors"]]),
    (
        "only a malicious pytorch_model.bin",
        lambda d: [
            ["rm", f"{d}/model.safetensors"],
            ["write", f"{d}/pytorch_model.bin", malicious_pickle("PWNED-bin")],
        ],
    ),
    ("config.json missing", lambda d: [["rm", f"{d}/config.json"]]),
    ("config.json zero bytes", lambda d: [["write", f"{d}/config.json", b""]]),
    ("config.json invalid JSON", lambda d: [["write", f"{d}/config.json", b'{"model_type": "bert",']]),
    ("config.json a list", lambda d: [["write", f"{d}/config.json", b"[]"]]),
    ("config.json without model_type", lambda d: [["json_del", f"{d}/config.json", "model_type"]]),
    (
        "config.json unknown model_type",
        lambda d: [["json_set", f"{d}/config.json", "model_type", "nonsense"]],
    ),
    ("config.json hidden_size a string", lambda d: [["json_set", f"{d}/config.json", "hidden_size", "wide"]]),
    ("config.json vocab_size -1", lambda d: [["json_set", f"{d}/config.json", "vocab_size", -1]]),
    (
        "config.json vocab_size smaller than the weights",
        lambda d: [["json_set", f"{d}/config.json", "vocab_size", 5]],
    ),
    (
        "config.json with auto_map (remote code)",
        lambda d: [["json_set", f"{d}/config.json", "auto_map", {"AutoModel": "evil.Model"}]],
    ),
    ("config.json id2label garbage", lambda d: [["json_set", f"{d}/config.json", "id2label", {"x": 1}]]),
    (
        "tokenizer files all missing",
        lambda d: [
            ["rm_glob", d, "tokenizer*"],
            ["rm_glob", d, "vocab*"],
            ["rm_glob", d, "special_tokens_map.json"],
            ["rm_glob", d, "merges.txt"],
        ],
    ),
    ("tokenizer.json truncated", lambda d: [["truncate", f"{d}/tokenizer.json", 0.5]]),
    ("tokenizer.json zero bytes", lambda d: [["write", f"{d}/tokenizer.json", b""]]),
    ("tokenizer_config.json invalid", lambda d: [["write", f"{d}/tokenizer_config.json", b"{nope"]]),
    (
        "tokenizer_config.json unknown class",
        lambda d: [["json_set", f"{d}/tokenizer_config.json", "tokenizer_class", "NoSuchTokenizer"]],
    ),
    ("model folder empty", lambda d: [["rm", d], ["mkdir", d]]),
    ("model folder is a file", lambda d: [["rm", d], ["write", d, b"not a model"]]),
]
CHECKPOINT_DAMAGE: list[tuple[str, Callable[[str], list[list[Any]]], bool]] = [  # desc, ops, fix sizes after
    ("training_state.pt zero bytes", lambda c: [["write", f"{c}/training_state.pt", b""]], True),
    ("training_state.pt truncated", lambda c: [["truncate", f"{c}/training_state.pt", 0.5]], True),
    ("training_state.pt junk", lambda c: [["gen", f"{c}/training_state.pt", "junk", 3000]], True),
    (
        "training_state.pt a malicious pickle",
        lambda c: [["write", f"{c}/training_state.pt", malicious_pickle("PWNED-state")]],
        True,
    ),
    (
        "training_state.pt truncated (sizes not fixed)",
        lambda c: [["truncate", f"{c}/training_state.pt", 0.5]],
        False,
    ),
    ("state.json invalid", lambda c: [["write", f"{c}/state.json", b"{"]], True),
    ("state.json an empty object", lambda c: [["write", f"{c}/state.json", b"{}"]], True),
    ("state.json step a string", lambda c: [["json_set", f"{c}/state.json", "state.step", "two"]], True),
    ("state.json step -5", lambda c: [["json_set", f"{c}/state.json", "state.step", -5]], True),
    (
        "state.json rng garbage",
        lambda c: [
            ["json_set", f"{c}/state.json", "rng_python", [1, 2]],
            ["json_set", f"{c}/state.json", "rng_numpy", "x"],
        ],
        True,
    ),
    ("checkpoint.json missing", lambda c: [["rm", f"{c}/checkpoint.json"]], False),
    ("checkpoint.json invalid", lambda c: [["write", f"{c}/checkpoint.json", b"[1,"]], False),
    (
        "checkpoint.json files a list",
        lambda c: [["json_set", f"{c}/checkpoint.json", "files", ["model.safetensors"]]],
        False,
    ),
    (
        "checkpoint.json lists a missing file",
        lambda c: [["json_set", f"{c}/checkpoint.json", "files.ghost.bin", 3]],
        False,
    ),
    ("model.safetensors truncated", lambda c: [["truncate", f"{c}/model.safetensors", 0.5]], True),
    ("model.safetensors junk", lambda c: [["gen", f"{c}/model.safetensors", "junk", 4000]], True),
    ("config.json removed", lambda c: [["rm", f"{c}/config.json"]], True),
    ("config.yaml invalid YAML", lambda c: [["write", f"{c}/config.yaml", b"task: [\n"]], True),
    ("config.yaml a list", lambda c: [["write", f"{c}/config.yaml", b"- 1\n"]], True),
    (
        "config.yaml an alias bomb",
        lambda c: [["write", f"{c}/config.yaml", f"x: {bomb_map()}\ntask: *m8\n".encode()]],
        True,
    ),
    (
        "config.yaml with a python tag",
        lambda c: [
            ["write", f"{c}/config.yaml", b'task: !!python/object/apply:os.system ["touch PWNED-ckpt"]\n']
        ],
        True,
    ),
    ("metrics.jsonl truncated mid-record", lambda c: [["truncate", f"{c}/metrics.jsonl", 0.7]], True),
    ("metrics.jsonl junk", lambda c: [["gen", f"{c}/metrics.jsonl", "junk", 500]], True),
    ("data_position.npz junk", lambda c: [["gen", f"{c}/data_position.npz", "junk", 500]], True),
    ("checkpoint folder is a file", lambda c: [["rm", c], ["write", c, b"x"]], False),
]


# Damage transformers may legitimately shrug off (it ignores or repairs these).
MAY_LOAD = {
    "config.json with auto_map (remote code)",
    "tokenizer_config.json unknown class",
    "config.json id2label garbage",
}


def gen_model(b: Builder, n: int) -> None:
    T: list[Callable[[], None]] = []
    for desc, ops in MODEL_DAMAGE:

        def pretrained(desc: str = desc, ops: Callable[[str], list[list[Any]]] = ops) -> None:
            src = b.src(lambda s: dget(s.config, "model.name_or_path") is not None)
            d = str(dget(src.config, "model.name_or_path"))
            cmd = b.rng.choice([src.train_cmd, src.train_cmd, "validate"])
            b.case(
                "model",
                f"pretrained model ({Path(d).name}): {desc}",
                src,
                cmd,
                ops=ops(d),
                expect="any" if desc in MAY_LOAD else "error",
            )

        def trained(desc: str = desc, ops: Callable[[str], list[list[Any]]] = ops) -> None:
            src = b.src(lambda s: s.trained)
            cmd = b.rng.choice(["evaluate", "predict"])
            b.case(
                "model",
                f"trained model (run/model): {desc}",
                src,
                cmd,
                ops=ops("run/model"),
                expect="any" if desc in MAY_LOAD else "error",
            )

        T += [pretrained, trained]

    def padded() -> None:
        src = b.src(lambda s: dget(s.config, "model.name_or_path") == "models/tiny-bert")
        cfg = b.cfg(src)
        dset(cfg, "model.name_or_path", "models/tiny-bert-padded")
        desc = "pretrained model with 7 embedding rows more than its tokenizer has tokens"
        b.case("model", desc, src, src.train_cmd, cfg=cfg)

    T += [padded, padded]
    for desc, ops, fix in CHECKPOINT_DAMAGE:

        def ckpt(desc: str = desc, ops: Callable[[str], list[list[Any]]] = ops, fix: bool = fix) -> None:
            need_stream = "data_position" in desc
            src = b.src(
                lambda s: (
                    s.checkpoint is not None and (not need_stream or bool(dget(s.config, "data.streaming")))
                )
            )
            c = f"run/{src.checkpoint}"
            steps = ops(c) + ([["fix_sizes", c]] if fix else [])
            how = b.rng.choice(["path", "path", "auto", "validate"])
            args = (
                ["--resume", f"cfg/{c}", "--set", "training.max_steps=3"]
                if how != "auto"
                else ["--resume", "auto", "--set", "training.max_steps=3"]
            )
            cmd = "validate" if how == "validate" else src.train_cmd
            b.case(
                "model",
                f"checkpoint: {desc} (--resume {'auto' if how == 'auto' else 'PATH'})",
                src,
                cmd,
                args=args,
                ops=steps,
                runs=[[src.name, "run"]],
                expect="any" if how == "validate" or "metrics" in desc else "error",
            )

        T.append(ckpt)

    def run_damage(desc: str, ops: list[list[Any]], args: list[str]) -> None:
        def make() -> None:
            src = b.src(lambda s: s.trained)
            b.case(
                "model",
                f"run folder: {desc} ({' '.join(args)})",
                src,
                src.train_cmd,
                args=args,
                ops=ops,
                runs=[[src.name, "run"]],
            )

        T.append(make)

    run_damage(".ptft-run marker removed", [["rm", "run/.ptft-run"]], ["--overwrite"])
    run_damage(
        ".ptft-run marker removed",
        [["rm", "run/.ptft-run"]],
        ["--resume", "auto", "--set", "training.max_steps=3"],
    )
    run_damage(".ptft-run marker junk", [["write", "run/.ptft-run", b"\xff\xfe"]], ["--overwrite"])
    run_damage(
        "checkpoints/ is a file",
        [["rm", "run/checkpoints"], ["write", "run/checkpoints", b"x"]],
        ["--resume", "auto", "--set", "training.max_steps=3"],
    )
    run_damage(
        "config.yaml removed",
        [["rm", "run/config.yaml"]],
        ["--resume", "auto", "--set", "training.max_steps=3"],
    )
    run_damage(
        "a stale .ptft-lock",
        [["write", "run/.ptft-lock", b"12345"]],
        ["--resume", "auto", "--set", "training.max_steps=3"],
    )
    run_damage(
        "metrics.jsonl junk",
        [["gen", "run/metrics.jsonl", "junk", 300]],
        ["--resume", "auto", "--set", "training.max_steps=3"],
    )
    run_damage(
        "a leftover temporary checkpoint",
        [
            ["mkdir", "run/checkpoints/.tmp-step-00000009"],
            ["write", "run/checkpoints/.tmp-step-00000009/x", b"partial"],
        ],
        ["--resume", "auto", "--set", "training.max_steps=3"],
    )
    for make in take(T, n, b.rng):
        make()


# ---------------- paths


ODD_NAMES = [
    "a #1.csv",
    "b:c.csv",
    "with space.csv",
    "ünïcödé.csv",
    "☃.csv",
    "-leading-dash.csv",
    "star*.csv",
    "bra[ck]et.csv",
    "quest?.csv",
    "percent%s.csv",
    "$HOME.csv",
    "~tilde.csv",
    "new\nline.csv",
    "back\\slash.csv",
    "x" * 250 + ".csv",
    "'quote\".csv",
    "semi;colon.csv",
    ".hidden.csv",
]


def gen_paths(b: Builder, n: int) -> None:
    T: list[Callable[[], None]] = []

    def set_case(
        desc: str,
        key: str,
        value: Any,
        kinds: str = "any",
        cmd: str | None = None,
        ops: list[list[Any]] | None = None,
        args: list[str] | None = None,
        expect: str = "any",
        runs: list[list[str]] | None = None,
    ) -> None:
        def make() -> None:
            src = b.src(lambda s: is_src(s, kinds))
            cfg = b.cfg(src)
            if key:
                dset(cfg, key, value)
            c = src.train_cmd if cmd == "train" else cmd or b.command(src, 0.5, 0.5)
            b.case("paths", desc, src, c, cfg=cfg, ops=ops or [], args=args or [], expect=expect, runs=runs)

        T.append(make)

    # nonexistent
    set_case("data.train does not exist", "data.train", "data/nope.csv", expect="error")
    set_case("data.validation does not exist", "data.validation", "data/nope.txt", expect="error")
    set_case(
        "model.name_or_path does not exist", "model.name_or_path", "./models/nope", "clf", expect="error"
    )
    set_case(
        "model.name_or_path a Hub-looking id (offline)",
        "model.name_or_path",
        "no-such-org/no-such-model",
        "clf",
        expect="error",
    )
    set_case(
        "tokenizer.name_or_path does not exist", "tokenizer.name_or_path", "./tok/nope", "clf", expect="error"
    )
    set_case("evaluate.model does not exist", "evaluate.model", "nope/model", cmd="evaluate", expect="error")
    set_case("predict.model does not exist", "predict.model", "nope/model", cmd="predict", expect="error")
    set_case("evaluate.data does not exist", "evaluate.data", "data/nope.csv", cmd="evaluate", expect="error")
    set_case(
        "--input does not exist",
        "",
        None,
        cmd="predict",
        args=["--input", "cfg/data/nope.txt"],
        expect="error",
    )
    set_case(
        "--resume PATH does not exist",
        "",
        None,
        args=["--resume", "cfg/run/checkpoints/step-99"],
        expect="error",
    )
    set_case(
        "data.dataset a local folder that does not exist",
        "data.dataset",
        "./no-dataset",
        "clf",
        expect="error",
    )

    def no_train(src: Source, cfg: dict[str, Any]) -> None:
        ddel(cfg, "data.train")

    # file where a folder is expected (and the reverse)
    set_case("output_dir is a data file", "output_dir", "data/train.csv", expect="error")
    set_case("output_dir is inside a file", "output_dir", "data/train.csv/run", expect="error")
    set_case("model.name_or_path is a file", "model.name_or_path", "data/train.csv", "clf", expect="error")
    set_case(
        "tokenizer.name_or_path is a file", "tokenizer.name_or_path", "data/train.csv", "clf", expect="error"
    )
    set_case("--resume is a file", "", None, args=["--resume", "cfg/data/train.csv"], expect="error")
    set_case(
        "--resume is the run folder, not a checkpoint",
        "",
        None,
        args=["--resume", "cfg/run"],
        runs=None,
        expect="error",
    )
    set_case(
        "evaluate.output_dir is a data file",
        "evaluate.output_dir",
        "data/train.csv",
        cmd="evaluate",
        expect="error",
    )
    set_case("evaluate.output_dir is the data folder", "evaluate.output_dir", "data", cmd="evaluate")
    set_case("evaluate.output_dir is the config folder", "evaluate.output_dir", ".", cmd="evaluate")
    set_case(
        "evaluate.output_dir under /proc",
        "evaluate.output_dir",
        "/proc/ptft-eval",
        cmd="evaluate",
        expect="error",
    )
    set_case("evaluate.model is a file", "evaluate.model", "data/train.csv", cmd="evaluate", expect="error")
    set_case("predict.model is the data folder", "predict.model", "data", cmd="predict", expect="error")
    set_case("evaluate.data is a folder", "evaluate.data", "data", cmd="evaluate", expect="error")
    # output_dir in odd places
    for value, expect in [
        (".", "error"),
        ("..", "error"),
        ("../..", "error"),
        ("~", "error"),
        ("~/run", "any"),
        ("data", "error"),
        ("models/tiny-bert", "error"),
        ("models", "error"),
        ("/proc/ptft-fuzz", "error"),
        ("/proc/self", "error"),
        ("/sys/ptft-fuzz", "error"),
        ("/dev/null", "error"),
        ("/dev", "error"),
        ("run/../run", "any"),
        ("run/", "any"),
        ("./run/./deep/../x", "any"),
        ("", "error"),
        (" ", "error"),
        ("cache", "any"),
    ]:
        for extra in ([], ["--overwrite"]):
            desc = f"output_dir {value!r}" + (" --overwrite" if extra else "")
            set_case(desc, "output_dir", value, args=extra, expect=expect)
    set_case(
        "output_dir holds the config (--overwrite)",
        "output_dir",
        ".",
        args=["--overwrite"],
        cmd=None,
        expect="error",
    )
    set_case(
        "output_dir a foreign folder (--overwrite)",
        "output_dir",
        "thesis",
        ops=[["mkdir", "thesis"], ["write", "thesis/chapter1.tex", b"years of work"]],
        args=["--overwrite"],
        cmd="train",
        expect="error",
    )
    set_case(
        "output_dir a foreign folder with a config.yaml (--overwrite)",
        "output_dir",
        "thesis",
        ops=[["mkdir", "thesis"], ["write", "thesis/config.yaml", b"task: clm\n"]],
        args=["--overwrite"],
        cmd="train",
        expect="error",
    )
    set_case(
        "output_dir a symlink to the data folder (--overwrite)",
        "output_dir",
        "link",
        ops=[["symlink", "link", "data"]],
        args=["--overwrite"],
        cmd="train",
        expect="error",
    )
    set_case(
        "output_dir a dangling symlink",
        "output_dir",
        "dangling",
        ops=[["symlink", "dangling", "nowhere/run"]],
    )
    set_case("output_dir 300-character component", "output_dir", "r" * 300, expect="error")
    set_case("output_dir 5,000-character path", "output_dir", "/".join(["d" * 200] * 25), expect="error")
    # cache_dir
    for value in [
        ".",
        "data",
        "data/train.csv",
        "run",
        "/proc/ptft-cache",
        "/dev/null",
        "~",
        "..",
        "r" * 300,
    ]:
        set_case(f"data.cache_dir {value[:40]!r}", "data.cache_dir", value, "lm", cmd=None)

    # --output
    def out_case(
        desc: str, out: str, inp: str | None = None, ops: list[list[Any]] | None = None, expect: str = "any"
    ) -> None:
        def make() -> None:
            src = b.src(lambda s: s.trained)
            args = (["--input", inp] if inp else []) + ["--output", out]
            b.case("paths", f"predict {desc}", src, "predict", args=args, ops=ops or [], expect=expect)

        T.append(make)

    out_case("--output equal to --input (csv)", "cfg/data/texts.csv", "cfg/data/texts.csv", expect="error")
    out_case(
        "--output equal to --input (jsonl)", "cfg/data/texts.jsonl", "cfg/data/texts.jsonl", expect="error"
    )
    out_case(
        "--output equal to --input through a symlink",
        "cfg/data/alias.jsonl",
        "cfg/data/texts.jsonl",
        ops=[["symlink", "data/alias.jsonl", "texts.jsonl"]],
        expect="error",
    )
    out_case("--output is the training file", "cfg/data/train.csv", expect="error")
    out_case("--output is a training file in jsonl", "cfg/data/train.jsonl")
    out_case("--output is the config", "cfg/config.yaml", expect="error")
    out_case("--output is a folder", "cfg/data", expect="error")
    out_case(
        "--output is a folder named like a file",
        "cfg/out.jsonl",
        ops=[["mkdir", "out.jsonl"]],
        expect="error",
    )
    out_case("--output is .", ".", expect="error")
    out_case("--output is empty", "", expect="error")
    out_case("--output under /proc", "/proc/ptft-out.jsonl", expect="error")
    out_case("--output inside a file", "cfg/data/train.csv/out.jsonl", expect="error")
    out_case("--output in a missing folder", "cfg/new/folder/out.jsonl")
    out_case(
        "--output a symlink to /dev/full", "cfg/full.jsonl", ops=[["symlink", "full.jsonl", "/dev/full"]]
    )
    out_case("--output /dev/null", "/dev/null", expect="error")
    out_case("--output with odd characters", "cfg/out #1: ü ☃.jsonl")
    out_case("--output a dash", "-", expect="error")
    out_case("--output 300-character name", "cfg/" + "o" * 300 + ".jsonl", expect="error")
    out_case("--output with an upper-case extension", "cfg/out.JSONL")
    out_case("--output .txt", "cfg/out.txt", expect="error")
    # odd characters in file names
    for name in ODD_NAMES:

        def odd(name: str = name) -> None:
            src = b.src(lambda s: not s.lm)
            cfg = b.cfg(src)
            train = str(dget(cfg, "data.train"))
            ext = Path(train).suffix
            rel = "data/" + name.replace(".csv", ext)
            dset(cfg, "data.train", rel)
            ops = [["copy", train, rel]]
            how = b.rng.random()
            if how < 0.3:  # via --set, relative to the working folder
                b.case(
                    "paths",
                    f"data.train named {name!r} (--set)",
                    src,
                    b.command(src, 0.5, 0.5),
                    args=["--set", f"data.train=cfg/{rel}"],
                    ops=ops,
                )
            elif how < 0.5:  # as predict --input
                b.case(
                    "paths",
                    f"--input named {name!r}",
                    src,
                    "predict",
                    args=["--input", f"cfg/data/{name.replace('.csv', '.txt')}"],
                    ops=[["copy", "data/texts.txt", "data/" + name.replace(".csv", ".txt")]],
                )
            else:
                b.case("paths", f"data.train named {name!r}", src, b.command(src, 0.5, 0.5), cfg=cfg, ops=ops)

        T.append(odd)
    for name in [
        "my config #1.yaml",
        "cfg:colon.yaml",
        "ünï ☃.yaml",
        "-dash.yaml",
        "config",
        "config.json",
        "c" * 240 + ".yaml",
    ]:

        def odd_config(name: str = name) -> None:
            src = b.src()
            b.case("paths", f"config named {name!r}", src, b.command(src, 0.5, 0.5), config_rel=f"cfg/{name}")

        T.append(odd_config)
    for name in ["run #1", "run: two", "rün ☃", "-run", "run\ttab"]:
        set_case(f"output_dir named {name!r}", "output_dir", name, cmd=None)

    # the config itself
    def config_is(desc: str, rel: str, ops: list[list[Any]]) -> None:
        def make() -> None:
            src = b.src()
            b.case(
                "paths",
                f"config is {desc}",
                src,
                b.command(src, 0.5, 0.5),
                ops=ops,
                config_rel=rel,
                expect="error",
                no_config=True,
            )

        T.append(make)

    config_is("missing", "cfg/nope.yaml", [])
    config_is("a folder", "cfg/data", [])
    config_is("a FIFO", "cfg/fifo.yaml", [["fifo", "fifo.yaml"]])
    config_is("/dev/null", "/dev/null", [])
    config_is("/dev/zero", "/dev/zero", [])
    config_is("a dangling symlink", "cfg/link.yaml", [["symlink", "link.yaml", "gone.yaml"]])
    config_is("a symlink loop", "cfg/loop.yaml", [["symlink", "loop.yaml", "loop.yaml"]])
    config_is("a binary file", "cfg/junk.yaml", [["gen", "junk.yaml", "junk", 3000]])
    config_is("a 300-character name", "cfg/" + "c" * 300 + ".yaml", [])
    # the shipped configs verbatim: their data is not here and their Hub ids are offline
    for src in b.sources:
        if src.name.startswith("derived/"):
            continue

        def verbatim(src: Source = src) -> None:
            b.case(
                "paths",
                "shipped config verbatim (data absent, Hub offline)",
                src,
                b.command(src, 0.5, 0.3),
                text=src.original.encode(),
                runs=[],
                expect="error",
                config_rel="cfg/verbatim/config.yaml",
            )

        T.append(verbatim)
    for make in take(T, n, b.rng):
        make()


# ---------------- commands


def gen_commands(b: Builder, n: int) -> None:
    T: list[Callable[[], None]] = []

    def cmd_case(
        desc: str,
        pick: Callable[[Source], bool],
        cmd: Callable[[Source], str],
        args: Callable[[Source], list[str]],
        runs: Callable[[Source], list[list[str]]] | None = None,
        edit: Callable[[dict[str, Any]], None] | None = None,
        ops: list[list[Any]] | None = None,
        expect: str = "any",
    ) -> None:
        def make() -> None:
            src = b.src(pick)
            cfg = b.cfg(src)
            if edit:
                edit(cfg)
            b.case(
                "commands",
                desc,
                src,
                cmd(src),
                cfg=cfg,
                args=args(src),
                runs=runs(src) if runs else None,
                ops=ops or [],
                expect=expect,
            )

        T.append(make)

    trained = lambda s: s.trained
    ckpt = lambda s: s.checkpoint is not None
    train = lambda s: s.train_cmd
    own = lambda s: [[s.name, "run"]]
    more = ["--set", "training.max_steps=3"]
    # every command on every config (the wrong task for the command included)
    for c in ("pretrain", "finetune", "evaluate", "predict", "validate"):
        cmd_case(f"{c} (no earlier run)", lambda s: True, lambda s, c=c: c, lambda s: [], runs=lambda s: [])
    cmd_case(
        "train --overwrite (no earlier run)",
        lambda s: True,
        train,
        lambda s: ["--overwrite"],
        runs=lambda s: [],
    )
    cmd_case("train --overwrite (a finished run)", trained, train, lambda s: ["--overwrite"], runs=own)
    cmd_case("train again (a finished run, no flag)", trained, train, lambda s: [], runs=own, expect="error")
    cmd_case(
        "train --resume auto (no earlier run)",
        lambda s: True,
        train,
        lambda s: ["--resume", "auto"],
        runs=lambda s: [],
    )
    cmd_case("train --resume auto (finished)", trained, train, lambda s: ["--resume", "auto"], runs=own)
    cmd_case(
        "train --resume auto, max_steps 3", trained, train, lambda s: ["--resume", "auto", *more], runs=own
    )
    cmd_case(
        "train --resume auto, max_steps 1 (below the checkpoint)",
        trained,
        train,
        lambda s: ["--resume", "auto", "--set", "training.max_steps=1"],
        runs=own,
    )
    cmd_case(
        "train --resume PATH", ckpt, train, lambda s: ["--resume", f"cfg/run/{s.checkpoint}", *more], runs=own
    )
    cmd_case(
        "train --resume PATH --overwrite",
        ckpt,
        train,
        lambda s: ["--resume", f"cfg/run/{s.checkpoint}", "--overwrite"],
        runs=own,
        expect="error",
    )
    cmd_case(
        "train --resume auto --overwrite",
        trained,
        train,
        lambda s: ["--resume", "auto", "--overwrite"],
        runs=own,
        expect="error",
    )
    cmd_case(
        "train --resume PATH of another run into a new output_dir",
        ckpt,
        train,
        lambda s: ["--resume", f"cfg/other/{s.checkpoint}", *more],
        runs=lambda s: [[s.name, "other"]],
    )
    cmd_case(
        "train --resume PATH of another run into an existing run",
        ckpt,
        train,
        lambda s: ["--resume", f"cfg/other/{s.checkpoint}", *more],
        runs=lambda s: [[s.name, "other"], [s.name, "run"]],
    )
    cmd_case(
        "train --resume PATH with output_dir the checkpoint's run folder's parent",
        ckpt,
        train,
        lambda s: ["--resume", f"cfg/run/{s.checkpoint}", "--set", "output_dir=cfg"],
        runs=own,
        expect="error",
    )
    cmd_case(
        "train --resume PATH with a changed learning rate",
        ckpt,
        train,
        lambda s: ["--resume", f"cfg/run/{s.checkpoint}", "--set", "training.learning_rate=0.123"],
        runs=own,
        expect="error",
    )
    cmd_case(
        "train --resume auto with a changed seed",
        trained,
        train,
        lambda s: ["--resume", "auto", "--set", "seed=99", *more],
        runs=own,
        expect="error",
    )
    cmd_case(
        "train --resume auto with a changed batch size",
        trained,
        train,
        lambda s: ["--resume", "auto", "--set", "training.batch_size=2", *more],
        runs=own,
        expect="error",
    )
    cmd_case("train --resume ''", lambda s: True, train, lambda s: ["--resume", ""], runs=own, expect="error")
    cmd_case("train --resume AUTO", trained, train, lambda s: ["--resume", "AUTO"], runs=own, expect="error")
    cmd_case("train --resume .", trained, train, lambda s: ["--resume", "."], runs=own, expect="error")
    cmd_case(
        "train with resume: auto in the file",
        trained,
        train,
        lambda s: [],
        runs=own,
        edit=lambda c: dset(c, "resume", "auto"),
    )
    cmd_case(
        "train resume: a path in the file",
        ckpt,
        train,
        lambda s: [],
        runs=own,
        edit=lambda c: dset(c, "resume", "run/checkpoints"),
        expect="error",
    )
    cmd_case(
        "validate --resume auto", trained, lambda s: "validate", lambda s: ["--resume", "auto"], runs=own
    )
    cmd_case(
        "validate --resume PATH",
        ckpt,
        lambda s: "validate",
        lambda s: ["--resume", f"cfg/run/{s.checkpoint}"],
        runs=own,
    )
    cmd_case(
        "validate --overwrite on a finished run",
        trained,
        lambda s: "validate",
        lambda s: ["--overwrite"],
        runs=own,
    )
    cmd_case("validate on a finished run (no flag)", trained, lambda s: "validate", lambda s: [], runs=own)
    cmd_case(
        "evaluate with no trained model",
        lambda s: True,
        lambda s: "evaluate",
        lambda s: [],
        runs=lambda s: [],
        expect="error",
    )
    cmd_case(
        "predict with no trained model",
        lambda s: True,
        lambda s: "predict",
        lambda s: [],
        runs=lambda s: [],
        expect="error",
    )
    cmd_case(
        "evaluate twice-written eval folder",
        trained,
        lambda s: "evaluate",
        lambda s: [],
        ops=[["mkdir", "run/eval"], ["write", "run/eval/notes.txt", b"mine"]],
    )
    # --prompt
    for prompt, pick in [
        ("", trained),
        ("[MASK]", lambda s: s.trained and s.task.startswith("mlm")),
        ("[MASK] " * 100, lambda s: s.trained and s.task.startswith("mlm")),
        ("no mask here", lambda s: s.trained and s.task.startswith("mlm")),
        ("x" * 100_000, trained),
        ("line\nbreaks\r\nand\ttabs", trained),
        ("\u202e\u200b😀", trained),
        ("<|endoftext|>", lambda s: s.trained and s.task == "clm"),
        ("--set", trained),
        ("-p", trained),
    ]:
        cmd_case(
            f"predict --prompt {prompt[:30]!r}",
            pick,
            lambda s: "predict",
            lambda s, p=prompt: ["--prompt", p],
        )
    cmd_case(
        "predict --prompt with --input",
        trained,
        lambda s: "predict",
        lambda s: ["--prompt", "The cat", "--input", "cfg/data/texts.txt"],
    )
    # --set forms
    for sets, expect in [
        (["=5"], "error"),
        (["training..learning_rate=1"], "error"),
        (["training=5"], "error"),
        (["training.batch_size.x=1"], "error"),
        (["output_dir="], "error"),
        (["data.labels=[a"], "error"),
        (['task=!!python/object/apply:os.system ["touch PWNED-set"]'], "error"),
        ([f"data.labels={bomb_list()}"], "error"),
        ([f"task={nested(20000)}"], "error"),
        (["seed=1", "seed=2"], "any"),
        (["training.max_steps=3"] * 50, "any"),
        (["ünï.cødé=1"], "error"),
        ([".=1"], "error"),
        (["training.=1"], "error"),
        ([" training.max_steps = 3 "], "any"),
        (["model.name_or_path=cfg/models/tiny-bert"], "any"),
        (["data.train=cfg/data"], "error"),
        (["output_dir=cfg/data"], "error"),
        (["output_dir=~"], "error"),
        (["predict=null"], "any"),
    ]:
        cmd_case(
            f"--set {' '.join(sets)[:50]!r}",
            lambda s: True,
            lambda s: b.command(s, 0.5, 0.5),
            lambda s, sets=sets: [a for v in sets for a in ("--set", v)],
            expect=expect,
        )
    for make in take(T, n, b.rng):
        make()


# ---------------- baseline


def gen_baseline(b: Builder, n: int) -> None:
    T = []
    for src in b.sources:
        for cmd in ("validate", "evaluate", "predict"):
            T.append((src, cmd))
    for src, cmd in take(T, n, b.rng):
        b.case("baseline", "runnable config as it is", src, cmd)


FAMILIES: dict[str, tuple[Callable[[Builder, int], None], int]] = {
    # shares of --cases; at 500: every key once in wrong-type (93) and range (52 + 40 extremes + 13)
    "baseline": (gen_baseline, 15),
    "wrong-type": (gen_wrong_type, 93),
    "range": (gen_range, 105),
    "yaml": (gen_yaml, 72),
    "data": (gen_data, 85),
    "model": (gen_model, 45),
    "paths": (gen_paths, 48),
    "commands": (gen_commands, 37),
}


def make_cases(sources: list[Source], n: int, seed: int, families: list[str]) -> list[Case]:
    """The first n cases for this seed: each family gets its share (its own random stream, so the
    cases of one family do not depend on another's)."""
    weights = {f: FAMILIES[f][1] for f in families}
    total = sum(weights.values())
    counts = {f: int(n * w / total) for f, w in weights.items()}
    for f in sorted(weights, key=lambda f: -weights[f])[: n - sum(counts.values())]:
        counts[f] += 1
    cases: list[Case] = []
    for f in families:
        b = Builder(sources, random.Random(f"{seed}:{f}"))
        FAMILIES[f][0](b, counts[f])
        cases += b.cases[: counts[f]]
    for i, c in enumerate(cases, 1):
        c.id = i
    return cases


# --------------------------------------------------------------------------------------------
# Materialising and running a case


@dataclass
class Context:
    assets: Path  # data/ and models/ every case starts from
    base: Path  # base runs: base/<slug>/proj/cfg/run
    work: Path  # case folders
    timeout: float
    max_rss: int  # bytes
    sources: dict[str, Source]


def slug(name: str) -> str:
    return name.replace("/", "__")


def apply_op(op: list[Any], cfg: Path) -> None:
    kind, rel = op[0], op[1] if len(op) > 1 else ""
    p = cfg / rel
    if kind != "noop" and kind != "rm_glob":
        p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "write":
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        p.write_bytes(op[2])
    elif kind == "gen":
        p.write_bytes(gen_bytes(op[2], op[3], zlib.crc32(rel.encode())))
    elif kind == "truncate":
        data = p.read_bytes()
        keep = op[2] if isinstance(op[2], int) else int(len(data) * op[2])
        p.write_bytes(data[:keep])
    elif kind == "rm":
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    elif kind == "rm_glob":
        for q in p.glob(op[2]):
            q.unlink()
    elif kind == "mkdir":
        if p.is_file():
            p.unlink()
        p.mkdir(parents=True, exist_ok=True)
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink":
        p.symlink_to(op[2])
    elif kind == "copy":
        src, dst = cfg / op[1], cfg / op[2]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    elif kind in ("json_set", "json_del"):
        obj = json.loads(p.read_text(encoding="utf-8"))
        parts = op[2].split(".")
        node = obj
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if kind == "json_set":
            node[parts[-1]] = op[3]
        else:
            node.pop(parts[-1], None)
        p.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    elif kind == "fix_sizes":
        marker = p / "checkpoint.json"
        obj = json.loads(marker.read_text(encoding="utf-8"))
        obj["files"] = {name: (p / name).stat().st_size for name in obj["files"] if (p / name).is_file()}
        marker.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    elif kind == "noop":
        pass
    else:
        raise ValueError(f"unknown op {kind}")


def copy_run(ctx: Context, source: str, dest: Path, case_proj: Path) -> None:
    """A base run, with its absolute paths rewritten for the case folder (as if it had been trained
    there) and its checkpoints' size lists fixed up to match."""
    base_proj = ctx.base / slug(source) / "proj"
    src_run = base_proj / "cfg" / "run"
    if not src_run.is_dir():
        return
    shutil.copytree(src_run, dest, symlinks=True)
    old, new = str(base_proj).encode(), str(case_proj).encode()
    for p in dest.rglob("*"):
        if p.is_file() and p.suffix in (".yaml", ".json", ".jsonl", ".txt"):
            data = p.read_bytes()
            if old in data:
                p.write_bytes(data.replace(old, new))
    for marker in dest.glob("checkpoints/*/checkpoint.json"):
        apply_op(["fix_sizes", str(marker.parent.relative_to(dest.parent))], dest.parent)


def materialize(case: Case, root: Path, ctx: Context) -> Path:
    """The case folder: home/, tmp/, proj/cfg/{config, data/, models/, copied runs}; returns proj/."""
    for d in ("home", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "home" / ".profile").write_text("# a user's file: HOME is never empty\n")
    proj = root / "proj"
    cfg = proj / "cfg"
    cfg.mkdir(parents=True)
    shutil.copytree(ctx.assets / "data", cfg / "data")
    shutil.copytree(ctx.assets / "models", cfg / "models")
    for source, rel in case.runs:
        copy_run(ctx, source, cfg / rel, proj)
    if case.config is not None and case.config_rel.startswith("cfg/"):
        target = proj / case.config_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_bytes(case.config)
        except OSError:  # a name the file system refuses (too long): write the usual file instead
            (proj / CFG).write_bytes(case.config)
    for op in case.ops:
        apply_op(op, cfg)
    return proj


Entry = tuple[str, int, int, str]  # kind, size, mtime_ns, sha1 (files) / target (links)


def snapshot(root: Path) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, 0, "")
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha1()
                with open(p, "rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = ("file", st.st_size, st.st_mtime_ns, h.hexdigest())
            else:
                out[rel] = ("other", 0, 0, oct(st.st_mode))
    return out


def allowed_zones(case: Case, root: Path) -> list[Path]:
    """Where a run may write: output_dir, evaluate.output_dir, predict.output, data.cache_dir (from the
    file, --set and --output), plus tool caches in HOME and TMPDIR."""
    home, proj = root / "home", root / "proj"
    cfg_dir = (proj / case.config_rel).parent if case.config_rel.startswith("cfg/") else proj / "cfg"
    zones = [home / ".cache", home / ".config", root / "tmp"]

    def resolve(value: Any, base: Path) -> Path | None:
        if not isinstance(value, str) or not value.strip():
            return None
        text = str(home) + value[1:] if value.startswith("~") else value
        try:
            return Path(os.path.normpath(base / text))
        except (ValueError, OSError):
            return None

    data: Any = None
    try:
        data = yaml.safe_load(case.config.decode("utf-8")) if case.config else None
    except Exception:  # noqa: BLE001 - any unparsable config: no zones from it
        data = None
    keys = ("output_dir", "evaluate.output_dir", "predict.output", "data.cache_dir")
    values: dict[str, tuple[Any, Path]] = {}
    if isinstance(data, dict):
        for k in keys:
            v = dget(data, k)
            if v is not None:
                values[k] = (v, cfg_dir)
    args = case.args
    for i, a in enumerate(args[:-1]):
        if a in ("--set", "-s") and "=" in args[i + 1]:
            k, _, text = args[i + 1].partition("=")
            if k.strip() in keys:
                try:
                    v = yaml.safe_load(text) if text.strip() else None
                except Exception:  # noqa: BLE001
                    v = text
                values[k.strip()] = (v, proj)
        if a in ("--output", "-o"):
            values["predict.output"] = (args[i + 1], proj)
    for v, base in values.values():
        p = resolve(v, base)
        if p is not None:
            zones.append(p)
    return zones


def inside(p: Path, zones: list[Path]) -> bool:
    return any(p == z or z in p.parents for z in zones)


def compare(
    case: Case, root: Path, before: dict[str, Entry], after: dict[str, Entry]
) -> tuple[list[str], list[str]]:
    """(changes that break the rules, changes inside the allowed zones)."""
    zones = allowed_zones(case, root)
    run_dirs = [root / "proj" / "cfg" / rel for _, rel in case.runs]
    bad, ok = [], []
    for rel in sorted(before.keys() | after.keys()):
        b, a = before.get(rel), after.get(rel)
        if b == a or (b and a and b[0] == a[0] == "dir"):
            continue
        p = root / rel
        what = "added" if b is None else "removed" if a is None else "changed"
        protected = b is not None and b[0] != "dir" and not inside(p, run_dirs)
        if protected:
            bad.append(f"{what} input {rel}")
        elif inside(p, zones) or (a and a[0] == "dir" and b is None and any(p in z.parents for z in zones)):
            ok.append(f"{what} {rel}")
        else:
            bad.append(f"{what} {rel}")
    return bad, ok


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def child_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PTFT_", "HF_", "XDG_"))}
    env.update(
        HOME=str(root / "home"),
        TMPDIR=str(root / "tmp"),
        XDG_CACHE_HOME=str(root / "home" / ".cache"),
        MPLCONFIGDIR=str(root / "home" / ".config" / "matplotlib"),
        HF_HOME=str(root / "home" / ".cache" / "huggingface"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        NO_COLOR="1",
        COLUMNS="200",
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def execute(case: Case, root: Path, proj: Path, ctx: Context, log: Path) -> tuple[int | None, float, str]:
    """Run the case; (exit status or None when killed, seconds, why it was killed)."""
    argv = [sys.executable, "-m", "ptft_cli", *case.argv()]
    t0 = time.monotonic()
    why = ""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=proj,
            env=child_env(root),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while proc.poll() is None:
            if time.monotonic() - t0 > ctx.timeout:
                why = "timeout"
            elif rss(proc.pid) > ctx.max_rss:
                why = "memory"
            if why:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.05)
    seconds = time.monotonic() - t0
    with contextlib.suppress(ProcessLookupError, PermissionError):  # anything it left running in its group
        os.killpg(proc.pid, signal.SIGKILL)
    return (None if why else proc.returncode), seconds, why


def classify(rc: int | None, why: str, text: str, bad_changes: list[str]) -> tuple[list[str], str]:
    """(outcomes, one-line reason). A case can be, e.g., both TRACEBACK and CHANGED OUTSIDE."""
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    if why == "timeout":
        outcomes, reason = ["HANG"], "killed after the time limit"
    elif why == "memory":
        outcomes, reason = ["BAD EXIT"], "killed: resident memory over the limit"
    elif "Traceback (most recent call last)" in text or rc == 1:
        outcomes, reason = ["TRACEBACK"], exception(text)
    elif rc == 0:
        outcomes, reason = ["ok"], ""
    elif rc == 2 and errors:
        outcomes, reason = ["user error"], errors[0]
    else:
        outcomes, reason = ["BAD EXIT"], f"exit {rc}: {last_line(text)}"
    if bad_changes:
        outcomes.append("CHANGED OUTSIDE")
        reason = (reason + " | " if reason else "") + "; ".join(bad_changes[:3])
    return outcomes, reason


def tail(text: str, n: int = 4000) -> str:
    """The end of the output, each line cut to 400 characters (a 2 MB path would hide the traceback)."""
    lines = [ln if len(ln) <= 400 else ln[:400] + f"... [{len(ln)} characters]" for ln in text.splitlines()]
    return "\n".join(lines)[-n:]


def exception(text: str) -> str:
    """`ExceptionType: message (at ptft_cli/file.py:line in function)` from a traceback."""
    frames = re.findall(r'File "[^"]*?/(ptft_cli/[^"]+)", line (\d+), in (\S+)', text)
    excs = [
        ln for ln in text.splitlines() if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)
    ]
    what = excs[-1][:250] if excs else last_line(text)
    return what + (f" (at {frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]})" if frames else "")


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def signature(outcome: str, reason: str) -> str:
    """A failure's group: its outcome and reason with paths, numbers and quoted values blurred."""
    r = reason.split(" | ")[0]
    at = re.search(r" \(at (ptft_cli/\S+):\d+ in (\S+)\)$", r)
    if outcome == "TRACEBACK" and at:  # one group per exception type and place
        return f"TRACEBACK: {r.split(':')[0]} in {at.group(1)}:{at.group(2)}"
    r = re.sub(r"(/[^\s:,'\"]+)+", "PATH", r)
    r = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", r)
    r = re.sub(r"\d+", "N", r)
    return f"{outcome}: {r[:160]}"


def run_case(case: Case, ctx: Context, keep: Path | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"case{case.id:03d}-", dir=ctx.work))
    log = ctx.work / f"case{case.id:03d}.log"
    try:
        proj = materialize(case, root, ctx)
        before = snapshot(root)
        rc, seconds, why = execute(case, root, proj, ctx, log)
        after = snapshot(root)
        bad, written = compare(case, root, before, after)
        if any("PWNED" in c for c in bad):
            bad.insert(0, "a !!python tag or a pickle was executed (PWNED marker file)")
        raw = log.read_bytes()
        text = ANSI.sub("", raw.decode("utf-8", "replace"))
        outcomes, reason = classify(rc, why, text, bad)
        flags = []
        if rc == 2:
            for ln in text.splitlines():
                if ln.startswith("error: ") and ": " not in ln[len("error: ") :]:
                    flags.append("no location")
                    break
            real = [w for w in written if "/.cache/" not in w and "/.config/" not in w and " tmp/" not in w]
            if real:
                flags.append("wrote on error")
        if any(len(ln) > 500 for ln in text.splitlines()):
            flags.append("long line")
        if rc == 0 and case.expect == "error" and "training would refuse" not in text:
            flags.append("accepted")
        result = {
            "id": case.id,
            "family": case.family,
            "desc": case.desc,
            "source": case.source,
            "argv": ["python", "-m", "ptft_cli", *case.argv()],
            "outcomes": outcomes,
            "rc": rc,
            "seconds": round(seconds, 2),
            "reason": reason,
            "flags": flags,
            "changed_outside": bad[:20],
            "written": written[:20],
            "output_tail": tail(text),
        }
        if keep is not None and (set(outcomes) & set(FATAL) or flags):
            save_repro(case, ctx, keep, result, text)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
        log.unlink(missing_ok=True)


def save_repro(case: Case, ctx: Context, keep: Path, result: dict[str, Any], text: str) -> None:
    """The case as it was before the run, the command, the output and the verdict."""
    fatal = [o for o in result["outcomes"] if o in FATAL]
    tag = fatal[0] if fatal else result["flags"][0]
    folder = keep / f"case{case.id:03d}-{tag.replace(' ', '-')}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    try:
        materialize(case, folder, ctx)
    except OSError as e:
        (folder / "materialize-error.txt").write_text(str(e))
    env = " ".join(
        f"{k}={shlex.quote(v)}"
        for k, v in [
            ("HF_HUB_OFFLINE", "1"),
            ("NO_COLOR", "1"),
            ("OMP_NUM_THREADS", "1"),
            ("HOME", "../home"),
        ]
    )
    cmd = f'cd "$(dirname "$0")/proj" && {env} PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m ptft_cli {shlex.join(case.argv())}\n'
    (folder / "cmd.sh").write_text("#!/bin/sh\n# " + case.desc.replace("\n", "\\n") + "\n" + cmd)
    (folder / "output.txt").write_text(text)
    (folder / "result.json").write_text(json.dumps(result, indent=1, default=str))


# --------------------------------------------------------------------------------------------
# Setup: tiny models, data, one short base run per config


def setup(work: Path, sources: list[Source], jobs: int) -> Context:
    global REPO_DATA
    assets = work / "assets"
    build_data(assets / "data")
    REPO_DATA = assets / "data"
    build_tiny_bert(assets / "models" / "tiny-bert")
    build_tiny_bert(assets / "models" / "tiny-bert-padded", extra_rows=7)
    ctx = Context(assets, work / "base", work / "cases", 120.0, 6 << 30, {s.name: s for s in sources})
    ctx.work.mkdir()
    # phase 1: every source but the one that fine-tunes a decoder trained in phase 1
    first = [s for s in sources if s.name != "derived/clm-finetune"]
    base_runs(ctx, first, jobs)
    donor = next(
        (s for s in first if s.task == "clm" and s.trained and dget(s.config, "tokenizer.type") == "char"),
        None,
    )
    if donor is not None:
        shutil.copytree(
            ctx.base / slug(donor.name) / "proj" / "cfg" / "run" / "model", assets / "models" / "tiny-gpt"
        )
    base_runs(ctx, [s for s in sources if s.name == "derived/clm-finetune"], jobs)
    return ctx


def base_runs(ctx: Context, sources: list[Source], jobs: int) -> None:
    """Train each source once (its runnable config as it is): the runs evaluate, predict and resume
    cases copy. Each is also a baseline check, recorded in `Source.result`."""

    def one(src: Source) -> None:
        root = ctx.base / slug(src.name)
        case = Case(0, "setup", "base run", src.name, src.train_cmd, config=dump(src.config))
        proj = materialize(case, root, ctx)
        log = ctx.base / f"{slug(src.name)}.log"
        rc, seconds, why = execute(case, root, proj, ctx, log)
        run = proj / "cfg" / "run"
        src.trained = rc == 0 and (run / "model").is_dir()
        ckpts = sorted((run / "checkpoints").glob("step-*")) if src.trained else []
        src.checkpoint = str(ckpts[-1].relative_to(run)) if ckpts else None
        text = ANSI.sub("", log.read_text("utf-8", "replace"))
        outcomes, reason = classify(rc, why, text, [])
        src.result = {
            "source": src.name,
            "argv": ["python", "-m", "ptft_cli", *case.argv()],
            "config": case.config.decode() if case.config else "",
            "outcomes": outcomes,
            "rc": rc,
            "seconds": round(seconds, 2),
            "reason": reason,
            "output_tail": tail(text),
        }
        if not src.trained:
            print(
                f"setup: the base run of {src.name} failed ({'/'.join(outcomes)}, {seconds:.1f}s): {reason}",
                flush=True,
            )

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, sources))


# --------------------------------------------------------------------------------------------
# Report


def summarize(
    results: list[dict[str, Any]], wall: float, setup_s: float, sources: list[Source]
) -> dict[str, Any]:
    per_outcome = Counter(o for r in results for o in r["outcomes"])
    families = sorted({r["family"] for r in results}, key=list(FAMILIES).index)
    per_family = {f: Counter(o for r in results if r["family"] == f for o in r["outcomes"]) for f in families}
    flags = Counter(f for r in results for f in r["flags"])
    groups: dict[str, list[Any]] = defaultdict(list)
    for src in sources:
        for o in (src.result or {}).get("outcomes", []):
            if o in FATAL:
                groups[signature(o, src.result["reason"])].append(f"base run {src.name}")
    for r in results:
        for o in r["outcomes"]:
            if o in FATAL:
                groups[signature(o, r["reason"])].append(r["id"])
    flag_groups: dict[str, list[int]] = defaultdict(list)
    for r in results:
        for f in r["flags"]:
            flag_groups[
                f"{f}: {r['family']}: {r['desc'][:70]}" if f == "accepted" else signature(f, r["reason"])
            ].append(r["id"])
    slowest = sorted(results, key=lambda r: -r["seconds"])[:10]
    return {
        "cases": len(results),
        "wall_seconds": round(wall, 1),
        "setup_seconds": round(setup_s, 1),
        "per_outcome": {o: per_outcome.get(o, 0) for o in OUTCOMES},
        "per_family": {
            f: {"cases": sum(1 for r in results if r["family"] == f), **dict(c)}
            for f, c in per_family.items()
        },
        "flags": dict(flags),
        "failure_groups": {k: v for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))},
        "flag_groups": {k: v for k, v in sorted(flag_groups.items(), key=lambda kv: -len(kv[1]))},
        "slowest": [
            {"id": r["id"], "seconds": r["seconds"], "desc": r["desc"], "argv": r["argv"][3:]}
            for r in slowest
        ],
        "base_runs": {
            s.name: {"outcomes": s.result["outcomes"], "reason": s.result["reason"]}
            for s in sources
            if s.result
        },
    }


def print_summary(s: dict[str, Any]) -> None:
    print(f"\n{s['cases']} cases in {s['wall_seconds']:.0f} s (setup {s['setup_seconds']:.0f} s)")
    print("\noutcome            cases")
    for o, k in s["per_outcome"].items():
        print(f"  {o:<16} {k:>5}")
    if s["flags"]:
        print("flags: " + ", ".join(f"{k} {v}" for k, v in s["flags"].items()))
    cols = ["ok", "user error", *FATAL]
    short = ["ok", "user-err", "TRACEBACK", "HANG", "BAD-EXIT", "CHANGED"]
    print("\nfamily      cases " + " ".join(f"{c:>9}" for c in short))
    for f, c in s["per_family"].items():
        print(f"  {f:<10} {c['cases']:>5} " + " ".join(f"{c.get(o, 0):>9}" for o in cols))
    failed = [
        f"{k} ({'/'.join(v['outcomes'])})" for k, v in s["base_runs"].items() if v["outcomes"] != ["ok"]
    ]
    if failed:
        print(
            "\nbase runs that did not finish (their evaluate/predict/resume cases find no run): "
            + ", ".join(failed)
        )
    if s["failure_groups"]:
        print("\ndistinct failures (cases):")
        for k, ids in s["failure_groups"].items():
            print(
                f"  {len(ids):>3}  {k}   [{', '.join(map(str, ids[:12]))}{' ...' if len(ids) > 12 else ''}]"
            )
    if s["flag_groups"]:
        print("\nflagged (cases):")
        for k, ids in s["flag_groups"].items():
            print(
                f"  {len(ids):>3}  {k}   [{', '.join(map(str, ids[:12]))}{' ...' if len(ids) > 12 else ''}]"
            )
    print("\nslowest:")
    for r in s["slowest"]:
        print(f"  {r['seconds']:6.1f} s  #{r['id']:<4} {r['desc'][:70]}  ({' '.join(r['argv'][:1])})")


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", type=int, default=500, help="number of cases (default 500)")
    ap.add_argument("--seed", type=int, default=0, help="the cases are a pure function of this")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once")
    ap.add_argument(
        "--max-rss-gb", type=float, default=6.0, help="a case using more memory is killed (BAD EXIT)"
    )
    ap.add_argument(
        "--keep-failures", type=Path, help="save a reproduction of every failing or flagged case here"
    )
    ap.add_argument("--out", type=Path, help="write the full report as JSON")
    ap.add_argument("--only", help="run only these case ids (comma-separated)")
    ap.add_argument(
        "--family", action="append", choices=list(FAMILIES), help="only these families (repeatable)"
    )
    ap.add_argument("--list", action="store_true", help="print the cases and exit (no setup, nothing run)")
    ap.add_argument(
        "--work", type=Path, help="work folder (default: a new temporary folder, removed at the end)"
    )
    args = ap.parse_args()

    sources = load_sources()
    families = args.family or list(FAMILIES)
    global REPO_DATA
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ptft-fuzz-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.list:
            REPO_DATA = work / "data"
            build_data(REPO_DATA)
            for s in sources:  # assume every base run works, for listing
                s.trained, s.checkpoint = True, "checkpoints/step-00000002"
            for c in make_cases(sources, args.cases, args.seed, families):
                print(
                    f"#{c.id:<4} {c.family:<10} {c.source:<28} {shlex.join(c.argv())[:60]:<60}  {c.desc[:90]!r}"
                )
            return 0
        print(
            f"ptft fuzz: {args.cases} cases, seed {args.seed}, {args.jobs} jobs, {args.timeout:g} s limit; work folder {work}",
            flush=True,
        )
        ctx = setup(work, sources, args.jobs)
        setup_s = time.monotonic() - t0
        print(
            f"setup: {setup_s:.0f} s; base runs ok: {sum(s.trained for s in sources)}/{len(sources)}",
            flush=True,
        )
        ctx.timeout, ctx.max_rss = args.timeout, int(args.max_rss_gb * (1 << 30))
        cases = make_cases(sources, args.cases, args.seed, families)
        if args.only:
            wanted = {int(x) for x in args.only.split(",")}
            cases = [c for c in cases if c.id in wanted]
        if args.keep_failures:
            args.keep_failures.mkdir(parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        lock = threading.Lock()
        done = 0
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run_case, c, ctx, args.keep_failures): c for c in cases}
            for fut in as_completed(futures):
                c = futures[fut]
                try:
                    r = fut.result()
                except Exception as e:  # noqa: BLE001 - the harness itself failed on this case
                    r = {
                        "id": c.id,
                        "family": c.family,
                        "desc": c.desc,
                        "source": c.source,
                        "argv": ["python", "-m", "ptft_cli", *c.argv()],
                        "outcomes": ["BAD EXIT"],
                        "rc": None,
                        "seconds": 0.0,
                        "reason": f"harness error: {e!r}",
                        "flags": [],
                        "changed_outside": [],
                        "written": [],
                        "output_tail": "",
                    }
                with lock:
                    results.append(r)
                    done += 1
                    bad = [o for o in r["outcomes"] if o in FATAL]
                    if bad or r["flags"]:
                        what = "/".join(bad) if bad else "flag: " + ", ".join(r["flags"])
                        print(
                            f"[{done:>3}/{len(cases)}] #{r['id']:<4} {what:<18} {r['family']:<10} {r['desc'][:60]!r} "
                            f"({r['argv'][3]}, {r['seconds']:.1f}s): {r['reason'][:200]}",
                            flush=True,
                        )
                    elif done % 50 == 0:
                        print(f"[{done:>3}/{len(cases)}] {time.monotonic() - t0:.0f} s", flush=True)
        results.sort(key=lambda r: r["id"])
        summary = summarize(results, time.monotonic() - t0, setup_s, sources)
        print_summary(summary)
        if args.out:
            base_runs_ = [src.result for src in sources]
            report = {"seed": args.seed, "summary": summary, "base_runs": base_runs_, "results": results}
            args.out.write_text(json.dumps(report, indent=1, default=str))
        base = [src.result for src in sources if src.result]
        return 1 if any(o in FATAL for r in results + base for o in r["outcomes"]) else 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
