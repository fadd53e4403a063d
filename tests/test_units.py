"""Pure functions: readers, batch order, learning-rate schedule, classification metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ptft_cli import optim
from ptft_cli.config import TrainingConfig
from ptft_cli.data import collate, sampler
from ptft_cli.data import files as data
from ptft_cli.errors import DataError
from ptft_cli.tasks import classification

# --- readers -------------------------------------------------------------------------------------


def test_csv_quoting_crlf_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes('\ufefftext,label\r\n"good, really",pos\r\n"said ""hi""",neg\r\n'.encode())
    table = data.read_table(str(p))
    assert table.rows == [{"text": "good, really", "label": "pos"}, {"text": 'said "hi"', "label": "neg"}]
    assert table.lines == [2, 3]


def test_tsv_reads_bare_quotes_literally(tmp_path: Path) -> None:
    p = tmp_path / "a.tsv"
    p.write_text("sentence\tlabel\nit 's a \"gem \t1\n")
    assert data.read_table(str(p)).rows == [{"sentence": "it 's a \"gem ", "label": "1"}]


def test_jsonl_json_txt_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    t = data.read_table(str(tmp_path / "a.jsonl"))
    assert [r["label"] for r in t.rows] == [1, 0] and t.lines == [1, 3]
    (tmp_path / "a.json").write_text(json.dumps({"data": [{"text": "x", "label": "a"}]}))
    assert data.read_table(str(tmp_path / "a.json")).rows == [{"text": "x", "label": "a"}]
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    t = data.read_table(str(tmp_path / "a.txt"), text_column="sentence")
    assert t.rows == [{"sentence": "one"}, {"sentence": "two"}] and t.lines == [1, 3]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["x", "y"], "label": [1, 0]}), tmp_path / "a.parquet")
    assert data.read_table(str(tmp_path / "a.parquet")).rows[1] == {"text": "y", "label": 0}


def test_labels_inferred_sort_numerically_and_map_by_name_or_id() -> None:
    assert classification.infer_label_names([10, 2, 1, 2]) == ["1", "2", "10"]
    assert classification.infer_label_names(["pos", "neg"]) == ["neg", "pos"]
    table = data.Table("f.csv", [{}] * 4, [2, 3, 4, 5])
    assert classification.label_ids(
        table, ["neg", 1, "1", "pos"], ["neg", "pos"], "label", declared=True
    ) == [0, 1, 1, 1]
    with pytest.raises(DataError, match="label '2' is not in data.labels"):
        classification.label_ids(table, ["2"], ["neg", "pos"], "label", declared=True)
    with pytest.raises(DataError, match="not in the training labels"):
        classification.label_ids(table, [1], ["neg", "pos"], "label", declared=False)


def test_seeded_subset_is_pythons_shuffle() -> None:
    import random

    rows = list(range(100))
    expected = rows[:]
    random.Random(0).shuffle(expected)
    assert data.seeded_subset(100, 10, 0) == expected[:10]
    train, held = data.split_off(100, 0.1, 0)
    assert len(held) == 10 and sorted(train + held) == rows


# --- batch order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
def test_epoch_batches_cover_every_example_once_and_are_reproducible(group: bool) -> None:
    lengths = [(i * 37) % 50 + 1 for i in range(1000)]
    a = sampler.epoch_batches(lengths, 32, seed=1, epoch=0, group_by_length=group)
    assert sorted(i for b in a for i in b) == list(range(1000))
    assert sorted(len(b) for b in a) == [1000 % 32] + [32] * (1000 // 32)  # one short batch at most
    assert a == sampler.epoch_batches(lengths, 32, seed=1, epoch=0, group_by_length=group)
    assert a != sampler.epoch_batches(lengths, 32, seed=1, epoch=1, group_by_length=group)


def test_length_grouping_removes_most_padding() -> None:
    lengths = [(i * 37) % 50 + 1 for i in range(4000)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    grouped = padded(sampler.epoch_batches(lengths, 32, seed=0, epoch=0, group_by_length=True))
    plain = padded(sampler.epoch_batches(lengths, 32, seed=0, epoch=0, group_by_length=False))
    assert grouped < 0.6 * plain
    assert grouped < 1.05 * sum(lengths)


def test_inference_batches_are_sorted_longest_first() -> None:
    lengths = [3, 9, 1, 7, 5]
    assert sampler.inference_batches(lengths, 2) == [[1, 3], [4, 0], [2]]


def test_pad_and_mask() -> None:
    seqs = [[5, 6, 7], [8]]
    assert collate.pad(seqs, 0).tolist() == [[5, 6, 7], [8, 0, 0]]
    assert collate.attention_mask(seqs).tolist() == [[1, 1, 1], [1, 0, 0]]


# --- learning-rate schedule ---------------------------------------------------------------------


def test_linear_warmup_then_decay_to_zero() -> None:
    f = [optim.lr_factor(s, total=10, warmup=2, kind="linear", floor=0.0) for s in range(11)]
    assert f[:3] == [0.0, 0.5, 1.0]
    assert f[6] == pytest.approx(0.5) and f[10] == 0.0


def test_cosine_reaches_its_floor() -> None:
    f = [optim.lr_factor(s, total=100, warmup=10, kind="cosine", floor=0.1) for s in range(101)]
    assert f[10] == 1.0 and f[100] == pytest.approx(0.1)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_warmup_ratio_and_steps() -> None:
    assert optim.warmup_steps(TrainingConfig(warmup_ratio=0.06), 125) == 8
    assert optim.warmup_steps(TrainingConfig(warmup_steps=500), 125) == 125


def test_no_weight_decay_on_biases_and_norms() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = optim.adamw(model, TrainingConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and [p.shape for p in decay["params"]] == [(4, 4)]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


# --- metrics -------------------------------------------------------------------------------------


def test_classification_report_golden_values() -> None:
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 1, 0, 1, 1, 2, 0, 2, 2]
    r = classification.report(y_true, y_pred, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 3]]
    assert r["accuracy"] == pytest.approx(7 / 9)
    assert r["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert r["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and r["per_class"]["b"]["recall"] == 1.0
    assert r["per_class"]["c"]["f1"] == pytest.approx(2 * 1 * 0.75 / 1.75)
    # same as sklearn.metrics.f1_score(y_true, y_pred, average="macro")
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 6 / 7) / 3)
