"""The demo's scripts: the random-init control arm, the side-by-side table, the generated reviews."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]


def test_compare_prints_the_runs_side_by_side(tmp_path: Path) -> None:
    for name, accuracy in (("demo-sentiment-random-init", 0.52), ("demo-sentiment-pretrained", 0.81)):
        run = tmp_path / name
        run.mkdir()
        results = {
            "steps": 10,
            "final": {"eval_accuracy": 0.5},
            "best": {"metric": "accuracy", "value": accuracy},
        }
        (run / "results.json").write_text(json.dumps(results))
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo_story.py"),
            "compare",
            *sorted(tmp_path.iterdir())[::-1],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.strip().splitlines()
    assert "random init" in lines[1] and lines[1].endswith("0.520")
    assert "pretrained" in lines[2] and lines[2].endswith("0.810")


def test_random_init_keeps_the_network_and_tokenizer_and_redraws_the_weights(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    # a "pretrained" source: the fixture is itself a seed-0 initialisation, so shift its weights
    source = tmp_path / "pretrained"
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert)
    for p in model.parameters():
        p.data += 1.0
    model.save_pretrained(source)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(source)
    tiny_bert = source
    target = tmp_path / "random-init"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo_story.py"), "random-init", str(tiny_bert), str(target)],
        check=True,
        capture_output=True,
    )
    before, after = (json.loads((d / "config.json").read_text()) for d in (tiny_bert, target))
    assert {k: before[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")} == {
        k: after[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")
    }
    assert (target / "tokenizer_config.json").is_file()
    a, b = load_file(tiny_bert / "model.safetensors"), load_file(target / "model.safetensors")
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert a[embeddings].shape == b[embeddings].shape and not (a[embeddings] == b[embeddings]).all()


def test_the_bundled_reviews_are_what_the_script_writes() -> None:
    generator = load_script("demo_reviews")
    bundled = (REPO / "configs" / "demo" / "data" / "reviews.txt").read_text(encoding="utf-8")
    assert bundled == generator.pretraining_text()
    assert bundled.count("\n\n") == generator.PRETRAINING_REVIEWS - 1


def test_each_generated_review_has_one_tone_and_a_verdict_to_match() -> None:
    generator = load_script("demo_reviews")
    positive, negative = set(generator.POSITIVE), set(generator.NEGATIVE)
    assert not positive & negative
    verdicts = {tone: generator.VERDICTS[tone].split("|") for tone in (True, False)}
    tones = {True: 0, False: 0}
    for text in generator.pretraining_text(count=500).split("\n\n"):
        words = set(re.findall(r"[a-z]+", text.lower()))
        tone = bool(words & positive)
        assert words & (positive if tone else negative) and not words & (negative if tone else positive), text
        assert any(text.strip().endswith(verdict) for verdict in verdicts[tone]), text
        tones[tone] += 1
    assert min(tones.values()) > 200  # both tones, about evenly
