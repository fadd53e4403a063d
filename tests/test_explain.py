"""`ptft explain` (Integrated Gradients, attention rollout, the HTML page) and `evaluate.group_by`,
end to end on a tiny BERT trained once for the module."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ptft_cli.cli import app
from tests.conftest import classifier_yaml, make_sentences, write_csv


def ptft(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """A config whose run holds a tiny sentiment classifier (the sentiment word decides the label)."""
    folder = tmp_path_factory.mktemp("explain")
    data = folder / "data"
    data.mkdir()
    write_csv(data / "train.csv", make_sentences(96, seed=1))
    rows = make_sentences(32, seed=2)
    # a group column for evaluate.group_by: two groups of different sizes
    (data / "validation.csv").write_text(
        "text,label,source\n"
        + "".join(f"{t},{y},{'web' if i % 3 else 'mail'}\n" for i, (t, y) in enumerate(rows)),
        encoding="utf-8",
    )
    (data / "texts.txt").write_text(
        "\n".join(t for t, _ in make_sentences(6, seed=3)) + "\n", encoding="utf-8"
    )
    config = folder / "config.yaml"
    config.write_text(classifier_yaml(tiny_bert, epochs=4) + "explain:\n  steps: 32\n", encoding="utf-8")
    result = ptft("finetune", "--config", config)
    assert result.exit_code == 0, result.output
    return config


class Page(HTMLParser):
    """What a browser would see: the token spans per method line, titles, links, scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[list[dict]] = []  # one list of token spans per method line
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "div" and a.get("class") == "method":
            self.lines.append([])
        if tag == "span" and "tok" in (a.get("class") or "").split():
            self.lines[-1].append({"special": "special" in a["class"], "style": a.get("style", "")})
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data


def test_explain_writes_attributions_and_a_self_contained_page(trained: Path) -> None:
    result = ptft("explain", "--config", trained)
    assert result.exit_code == 0, result.output
    run = trained.parent / "run"
    rows = read_jsonl(run / "explanations.jsonl")
    texts = (trained.parent / "data" / "texts.txt").read_text().split("\n")[:6]
    assert [r["text"] for r in rows] == texts and [r["id"] for r in rows] == list(range(1, 7))

    from captum.attr import LayerIntegratedGradients
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    for r in rows:
        enc = tok(r["text"], return_tensors="pt")
        assert r["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"][0])
        assert r["special"] == [t in ("[CLS]", "[SEP]") for t in r["tokens"]]
        with torch.no_grad():
            probs = model(**enc).logits.softmax(-1)[0].tolist()
        assert list(r["probabilities"].values()) == pytest.approx(probs, abs=1e-5)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
        ig, roll = r["integrated_gradients"], r["attention_rollout"]
        assert len(ig) == len(roll) == len(r["tokens"])
        # the baseline keeps [CLS]/[SEP]: they get no attribution
        assert all(a == 0.0 for a, sp in zip(ig, r["special"]) if sp)
        # completeness: attributions add up to p(input) - p(baseline), up to the reported delta, with
        # p(baseline) computed here from the words replaced by [MASK]
        ids = enc["input_ids"].clone()
        ids[0, 1:-1] = tok.mask_token_id
        with torch.no_grad():
            p_base = model(input_ids=ids).logits.softmax(-1)[0, model.config.label2id[r["label"]]].item()
        assert r["ig_baseline"] == "mask" and r["ig_baseline_probability"] == pytest.approx(p_base, abs=1e-5)
        assert sum(ig) - (r["score"] - p_base) == pytest.approx(r["ig_convergence_delta"], abs=1e-4)
        # the same attributions as captum's own layer hook on the word embeddings
        lig = LayerIntegratedGradients(
            lambda i: model(input_ids=i).logits.softmax(-1), model.get_input_embeddings()
        )
        target = model.config.label2id[r["label"]]
        expected = lig.attribute(enc["input_ids"], baselines=ids, target=target, n_steps=32).sum(-1)[0]
        assert ig == pytest.approx(expected.tolist(), abs=1e-4)
        # rollout: a product of row-stochastic matrices, so [CLS]'s row is a distribution
        assert sum(roll) == pytest.approx(1.0, abs=1e-4) and min(roll) >= 0

    page = Page()
    page.feed((run / "explanations.html").read_text(encoding="utf-8"))
    assert len(page.lines) == 2 * len(rows)  # one line per method per text
    for line, r in zip(page.lines, [r for r in rows for _ in range(2)]):
        assert len(line) == len(r["tokens"])  # one span per token
        assert [s["special"] for s in line] == r["special"]
    assert "ptft explain" in page.title
    assert all(f"{r['score']:.4f}" in "".join(page.text) for r in rows)  # the class probabilities
    assert not page.urls and "script" not in page.tags and "link" not in page.tags  # nothing to fetch


def test_text_is_escaped_and_a_second_run_replaces_its_own_page(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.jsonl"
    text = 'good <script>alert("x")</script> <img src="http://example.com/a.png"> & film'
    result = ptft("explain", "--config", trained, "--text", text, "--output", out)
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(out)
    assert row["text"] == text and row["id"] == 1
    page = Page()
    page.feed(out.with_suffix(".html").read_text(encoding="utf-8"))
    assert "script" not in page.tags and "img" not in page.tags and not page.urls
    assert text in "".join(page.text)  # shown as text, not markup
    again = ptft("explain", "--config", trained, "--text", "bad film", "--output", out)
    assert again.exit_code == 0, again.output
    assert read_jsonl(out)[0]["text"] == "bad film"


def test_rollout_golden_values() -> None:
    from ptft_cli.attribution import rollout

    swap = torch.tensor(
        [[[[0.0, 1.0], [1.0, 0.0]]]]
    )  # (1 batch, 1 head, 2, 2): each token looks at the other
    assert rollout((swap,), 0) == pytest.approx([0.5, 0.5])
    assert rollout((torch.eye(2)[None, None],) * 3, 1) == pytest.approx([0.0, 1.0])
    # two heads averaged, then the residual: [[.5,.5],[0,1]] -> 0.5A+0.5I = [[.75,.25],[0,1]]
    heads = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    assert rollout((heads, heads), 0) == pytest.approx([0.5625, 0.4375])  # .75*.75, .75*.25+.25


def test_bad_explain_input_is_one_line_and_writes_nothing(trained: Path, tmp_path: Path) -> None:
    run = trained.parent / "run"
    foreign = tmp_path / "mine.html"
    foreign.write_text("<p>my notes</p>", encoding="utf-8")
    cases = [
        (["--text", "good", "--input", trained.parent / "data" / "texts.txt"], "both set"),
        (["--output", tmp_path / "x.csv"], "not .csv"),
        (["--output", tmp_path / "mine.jsonl"], "not a page ptft explain wrote"),
        (["--set", "explain.methods=[]"], "no attribution method"),
        (["--set", "explain.methods=[lime]"], "'lime' is not one of"),
        (["--set", "explain.steps=1"], "explain.steps"),
        (["--set", "explain.baseline=unk"], "explain.baseline"),
        (["--set", "task=mlm"], "explains classifiers, not task 'mlm'"),
    ]
    for args, expected in cases:
        result = ptft("explain", "--config", trained, *args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output and "Traceback" not in result.output, (args, result.output)
        assert len([ln for ln in result.output.splitlines() if ln.startswith("error:")]) == 1
    assert foreign.read_text() == "<p>my notes</p>"
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "mine.jsonl").exists()
    assert not (run / "explanations.html").exists() or (run / "explanations.jsonl").exists()


def test_missing_captum_names_the_pip_command(trained: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum.attr` raises ImportError
    out = tmp_path / "e.jsonl"
    result = ptft("explain", "--config", trained, "--text", "good film", "--output", out)
    assert result.exit_code == 2 and "pip install 'ptft[explain]'" in result.output, result.output
    assert not out.exists()
    # attention rollout alone needs no captum
    result = ptft(
        "explain",
        "--config",
        trained,
        "--text",
        "good film",
        "--output",
        out,
        "--set",
        "explain.methods=[attention_rollout]",
    )
    assert result.exit_code == 0, result.output
    assert "integrated_gradients" not in read_jsonl(out)[0]


def test_evaluate_group_by_reports_each_group_and_the_gap(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = ptft(
        "evaluate",
        "--config",
        trained,
        "--set",
        "evaluate.group_by=source",
        "--set",
        f"evaluate.output_dir={out}",
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    groups = m["per_group"]
    assert m["group_by"] == "source" and set(groups) == {"web", "mail"}
    assert groups["mail"]["support"] == 11 and groups["web"]["support"] == 21  # rows 0, 3, ... 30 are mail
    # the groups partition the data: support-weighted group accuracy is the overall accuracy
    weighted = sum(g["accuracy"] * g["support"] for g in groups.values()) / m["examples"]
    assert weighted == pytest.approx(m["accuracy"])
    for metric in ("accuracy", "macro_f1"):
        values = [g[metric] for g in groups.values()]
        assert m[f"group_{metric}_gap"] == pytest.approx(max(values) - min(values))
    assert "per group (source)" in result.output and "group_accuracy_gap" in result.output


def test_group_by_a_missing_column_is_one_line_before_anything_is_written(
    trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = ptft(
        "evaluate",
        "--config",
        trained,
        "--set",
        "evaluate.group_by=region",
        "--set",
        f"evaluate.output_dir={out}",
    )
    assert result.exit_code == 2, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("error:"))
    assert "validation.csv" in line and "'region'" in line and "text, label, source" in line, line
    assert "Traceback" not in result.output and not out.exists()


def test_group_report_golden_values() -> None:
    from ptft_cli.tasks.classification import group_report

    r = group_report([0, 0, 1, 1, 0, 1], [0, 1, 1, 1, 0, 0], ["a", "a", "a", "a", "b", "b"], ["neg", "pos"])
    assert r["per_group"]["a"] == pytest.approx(
        {"accuracy": 0.75, "macro_f1": (2 / 3 + 0.8) / 2, "support": 4}
    )
    assert r["per_group"]["b"] == pytest.approx({"accuracy": 0.5, "macro_f1": 1 / 3, "support": 2})
    assert r["group_accuracy_gap"] == pytest.approx(0.25)
    assert r["group_macro_f1_gap"] == pytest.approx((2 / 3 + 0.8) / 2 - 1 / 3)
    assert r["group_accuracy_range"] == {"lowest": "b", "highest": "a"}


def test_group_by_is_refused_for_tasks_without_labels(trained: Path) -> None:
    result = ptft("evaluate", "--config", trained, "--set", "task=clm", "--set", "evaluate.group_by=source")
    assert result.exit_code == 2 and "evaluate.group_by" in result.output and "Traceback" not in result.output


def test_group_by_on_the_rows_a_run_held_out(trained: Path, tmp_path: Path) -> None:
    """No validation file: evaluate scores the rows split.json names, grouped by the training file's column."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained.parent / "run", run)
    train = tmp_path / "train.csv"
    rows = make_sentences(20, seed=5)
    train.write_text(
        "text,label,source\n" + "".join(f"{t},{y},{'ab'[i % 2]}\n" for i, (t, y) in enumerate(rows))
    )
    held = [0, 1, 2, 4, 7]
    split = {"data": str(train), "bytes": train.stat().st_size, "validation_fraction": 0.25, "rows": held}
    (run / "split.json").write_text(json.dumps(split))
    common = ["--set", f"output_dir={run}", "--set", f"data.train={train}", "--set", "data.validation=null"]
    result = ptft("evaluate", "--config", trained, *common, "--set", "evaluate.group_by=source")
    assert result.exit_code == 0, result.output
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["examples"] == 5 and {g: v["support"] for g, v in m["per_group"].items()} == {"a": 3, "b": 2}
    shutil.rmtree(run / "eval")
    result = ptft("evaluate", "--config", trained, *common, "--set", "evaluate.group_by=region")
    assert result.exit_code == 2 and "train.csv" in result.output and "'region'" in result.output, (
        result.output
    )
    assert not (run / "eval").exists()
