"""Generation and fill-mask on tiny models built here: equal to plain transformers / torch, order kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ptft_cli.decoding import until_eos
from ptft_cli.inference import Generation, fill_mask, generate

LETTERS = list("abcdefghijkl")  # the trained model continues "c d" with "e f ... l" and then EOS
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "rug"]


def word_tokenizer(vocab: list[str], **special: str) -> Any:
    """A whitespace word-level tokenizer wrapped for transformers (decode joins tokens with spaces)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **special)


@pytest.fixture(scope="module")
def gpt_tokenizer() -> Any:
    # Like GPT-2: BOS and EOS, no pad token.
    return word_tokenizer(["<s>", "</s>", "<unk>", *LETTERS, *WORDS], bos_token="<s>", eos_token="</s>")


def tiny_gpt(tokenizer: Any, seed: int, **config: Any) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    size = {"n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2}
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), **size, **special, **config))


@pytest.fixture(scope="module", params=[1, 2], ids=["no-eos", "early-eos"])
def random_gpt(gpt_tokenizer: Any, request: pytest.FixtureRequest) -> Any:
    """Untrained, untied and widely initialised, so greedy output varies instead of repeating the
    prompt's last token; with seed 2 every prompt hits EOS within a few tokens."""
    return tiny_gpt(gpt_tokenizer, request.param, tie_word_embeddings=False, initializer_range=0.2).eval()


@pytest.fixture(scope="module")
def alphabet_gpt(gpt_tokenizer: Any) -> Any:
    """Trained (about a second) to continue a run of letters to "l", then emit EOS."""
    model = tiny_gpt(gpt_tokenizer, seed=1)
    eos = gpt_tokenizer.eos_token_id
    runs = [gpt_tokenizer.convert_tokens_to_ids(LETTERS[s:]) + [eos] for s in range(len(LETTERS))]
    width = max(len(r) for r in runs)
    ids = torch.tensor([r + [eos] * (width - len(r)) for r in runs])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in runs])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):  # reaches ~0.01 from about step 40
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    return model.eval()


def greedy_by_hand(model: Any, ids: list[int], n: int) -> list[int]:
    """Argmax of the full forward pass, no cache, no padding, no early stop."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids) :]


def as_completion(tokenizer: Any, gen: list[int]) -> tuple[str, int]:
    """What `generate` should report for these greedy ids: text up to EOS, spaced after the prompt."""
    if tokenizer.eos_token_id in gen:
        gen = gen[: gen.index(tokenizer.eos_token_id) + 1]
    text = tokenizer.decode(gen, skip_special_tokens=True)
    return (" " + text if text else ""), len(gen)


def run(model: Any, tokenizer: Any, prompts: list[str], **kw: Any) -> list[dict]:
    args = {"max_new_tokens": 6, "do_sample": False, "temperature": 1.0, "top_k": None, "top_p": None}
    args |= {"batch_size": 4, "seed": 0} | kw
    progress = args.pop("progress", None)
    return generate(model, tokenizer, prompts, Generation(**args), progress)


PROMPTS = ["the cat sat on the mat", "dog", "a b", "the rug ran on", "k"]


def test_greedy_equals_a_hand_written_loop_at_every_batch_size(random_gpt: Any, gpt_tokenizer: Any) -> None:
    tok = gpt_tokenizer
    expected = []
    for p in PROMPTS:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        expected.append(as_completion(tok, greedy_by_hand(random_gpt, ids, 6)))
    for batch_size in (1, 2, 5):
        out = run(random_gpt, tok, PROMPTS, batch_size=batch_size)
        assert [r["prompt"] for r in out] == PROMPTS  # order restored after the length sort
        assert [(r["completion"], r["new_tokens"]) for r in out] == expected
        assert all(r["new_tokens"] <= 6 for r in out)


def test_greedy_equals_transformers_generate_on_one_prompt(random_gpt: Any, gpt_tokenizer: Any) -> None:
    ids = gpt_tokenizer("the dog", add_special_tokens=False, return_tensors="pt")["input_ids"]
    ref = random_gpt.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=1, eos_token_id=1)
    [out] = run(random_gpt, gpt_tokenizer, ["the dog"], max_new_tokens=5)
    gen = ref[0, ids.shape[1] :].tolist()
    assert out["completion"] == " " + gpt_tokenizer.decode(gen, skip_special_tokens=True)


def test_stops_at_eos_and_reports_why(alphabet_gpt: Any, gpt_tokenizer: Any) -> None:
    prompts = ["c d", "j", "a b c d e f g h i j k l", "e"]
    out = run(alphabet_gpt, gpt_tokenizer, prompts, max_new_tokens=10, batch_size=4)
    assert [r["prompt"] for r in out] == prompts
    assert out[0] == {
        "prompt": "c d",
        "completion": " e f g h i j k l",
        "new_tokens": 9,
        "finish_reason": "eos",
    }
    assert out[1] == {"prompt": "j", "completion": " k l", "new_tokens": 3, "finish_reason": "eos"}
    assert out[2] == {"prompt": prompts[2], "completion": "", "new_tokens": 1, "finish_reason": "eos"}
    # Eight letters and EOS do not fit in 3 tokens.
    short = run(alphabet_gpt, gpt_tokenizer, ["e", "k"], max_new_tokens=3)
    assert short[0] == {"prompt": "e", "completion": " f g h", "new_tokens": 3, "finish_reason": "length"}
    assert short[1] == {"prompt": "k", "completion": " l", "new_tokens": 2, "finish_reason": "eos"}


def test_caller_state_is_left_alone(alphabet_gpt: Any, gpt_tokenizer: Any) -> None:
    alphabet_gpt.train()
    seen: list[int] = []
    run(alphabet_gpt, gpt_tokenizer, ["a", "b c", "d"], batch_size=2, progress=seen.append)
    assert alphabet_gpt.training
    alphabet_gpt.eval()
    assert seen == [2, 1]
    assert gpt_tokenizer.pad_token is None and gpt_tokenizer.padding_side == "right"


def test_sampling_is_reproducible_and_uses_its_settings(random_gpt: Any, gpt_tokenizer: Any) -> None:
    sample = {"do_sample": True, "max_new_tokens": 20, "temperature": 1.5}
    a = run(random_gpt, gpt_tokenizer, PROMPTS, seed=3, **sample)
    assert a == run(random_gpt, gpt_tokenizer, PROMPTS, seed=3, **sample)
    assert a != run(random_gpt, gpt_tokenizer, PROMPTS, seed=4, **sample)
    # A cut-off keeping one token leaves the argmax, whatever the seed.
    greedy = run(random_gpt, gpt_tokenizer, PROMPTS)
    assert run(random_gpt, gpt_tokenizer, PROMPTS, do_sample=True, top_k=1, seed=5) == greedy
    assert run(random_gpt, gpt_tokenizer, PROMPTS, do_sample=True, top_p=1e-6, seed=6) == greedy


def test_long_prompts_keep_their_end(random_gpt: Any, gpt_tokenizer: Any) -> None:
    words = [WORDS[i % len(WORDS)] for i in range(70)]
    long, tail = " ".join(words), " ".join(words[-60:])  # 64 positions - 4 new tokens = 60 kept
    out = run(random_gpt, gpt_tokenizer, [long, tail], max_new_tokens=4)
    assert out[0]["prompt"] == long
    assert (out[0]["completion"], out[0]["new_tokens"]) == (out[1]["completion"], out[1]["new_tokens"])


def test_empty_prompt_starts_from_bos(random_gpt: Any, gpt_tokenizer: Any) -> None:
    [out] = run(random_gpt, gpt_tokenizer, [""], max_new_tokens=3)
    bos = gpt_tokenizer.bos_token_id
    text, n = as_completion(gpt_tokenizer, greedy_by_hand(random_gpt, [bos], 3))
    assert (out["completion"], out["new_tokens"]) == (text.lstrip(), n)  # no prompt text to space from


def test_refuses_what_cannot_run(random_gpt: Any) -> None:
    no_bos = word_tokenizer(["<s>", "</s>", "<unk>", *LETTERS, *WORDS], eos_token="</s>")
    with pytest.raises(ValueError, match="prompt 2 is empty and the tokenizer has no bos token"):
        run(random_gpt, no_bos, ["a", ""])
    with pytest.raises(ValueError, match=r"max_new_tokens \(64\).*maximum length \(64\)"):
        run(random_gpt, no_bos, ["a"], max_new_tokens=64)


# ---------------------------------------------------------------------------------------------
# Repetition penalty, stop strings, streaming


def transformers_alone(model: Any, tokenizer: Any, prompt: str, n: int, **kw: Any) -> list[int]:
    """Plain `model.generate` on one unpadded prompt, stopped at EOS as `generate` reports it."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    eos = tokenizer.eos_token_id
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=eos, eos_token_id=eos, **kw)
    return out[0, ids.shape[1] :].tolist()


def test_repetition_penalty_equals_transformers_generate_one_prompt_at_a_time(
    random_gpt: Any, gpt_tokenizer: Any
) -> None:
    tok = gpt_tokenizer
    plain = run(random_gpt, tok, PROMPTS, max_new_tokens=8, batch_size=5)
    penalised = run(random_gpt, tok, PROMPTS, max_new_tokens=8, batch_size=5, repetition_penalty=3.0)
    for prompt, row in zip(PROMPTS, penalised, strict=True):
        # batched with left padding; the padding (EOS here) must not be penalised as if it were text
        want = as_completion(tok, transformers_alone(random_gpt, tok, prompt, 8, repetition_penalty=3.0))
        assert (row["completion"], row["new_tokens"]) == want
    assert [r["completion"] for r in penalised] != [r["completion"] for r in plain]
    assert run(random_gpt, tok, PROMPTS, max_new_tokens=8, repetition_penalty=1.0) == plain


def test_stop_strings_cut_the_completion_and_say_why(alphabet_gpt: Any, gpt_tokenizer: Any) -> None:
    def one(prompt: str, stop: tuple[str, ...]) -> dict:
        return run(alphabet_gpt, gpt_tokenizer, [prompt], max_new_tokens=10, stop=stop)[0]

    # " e f g h ..." ends once "h" appears (4 new tokens); the text stops before it.
    assert one("c d", ("h",)) == {
        "prompt": "c d",
        "completion": " e f g ",
        "new_tokens": 4,
        "finish_reason": "stop",
    }
    # A stop string across tokens; of two, the earlier in the text wins.
    assert one("c d", ("g h",))["completion"] == " e f "
    assert one("c d", ("j", "f g")) == {
        "prompt": "c d",
        "completion": " e ",
        "new_tokens": 3,
        "finish_reason": "stop",
    }
    # Only the completion counts: "d e" starts in the prompt, so generation runs on to EOS.
    assert one("c d", ("d e",)) == {
        "prompt": "c d",
        "completion": " e f g h i j k l",
        "new_tokens": 9,
        "finish_reason": "eos",
    }
    assert one("c d", ("e f g h i j k l",))["finish_reason"] == "stop"
    [short] = run(alphabet_gpt, gpt_tokenizer, ["e"], max_new_tokens=3, stop=("k",))
    assert short == {"prompt": "e", "completion": " f g h", "new_tokens": 3, "finish_reason": "length"}
    with pytest.raises(ValueError, match="stop string must not be empty"):
        one("c d", ("h", ""))


def test_a_sequence_that_stops_leaves_the_batch_unchanged(alphabet_gpt: Any, gpt_tokenizer: Any) -> None:
    """Rows stop at different steps (or not at all); each equals its prompt generated alone, although a
    stopped row is padded with EOS afterwards while the others go on."""
    prompts = ["c d", "j", "a b", "e", "k"]
    stop = ("g", "i j")
    together = run(alphabet_gpt, gpt_tokenizer, prompts, max_new_tokens=10, batch_size=5, stop=stop)
    alone = [run(alphabet_gpt, gpt_tokenizer, [p], max_new_tokens=10, stop=stop)[0] for p in prompts]
    assert together == alone
    assert [(r["completion"], r["new_tokens"], r["finish_reason"]) for r in together] == [
        (" e f ", 3, "stop"),
        (" k l", 3, "eos"),
        (" c d e f ", 5, "stop"),
        (" f ", 2, "stop"),
        (" l", 2, "eos"),
    ]


def test_stop_strings_on_a_random_model_match_generating_alone(random_gpt: Any, gpt_tokenizer: Any) -> None:
    tok = gpt_tokenizer
    free = run(random_gpt, tok, PROMPTS, max_new_tokens=12)
    # a word some completions contain and others do not: some rows stop, the rest run on
    words = sorted({w for r in free for w in r["completion"].split()})
    stop = next((w,) for w in words if 0 < sum(w in r["completion"] for r in free) < len(free))
    together = run(random_gpt, tok, PROMPTS, max_new_tokens=12, batch_size=5, stop=stop)
    alone = [run(random_gpt, tok, [p], max_new_tokens=12, stop=stop)[0] for p in PROMPTS]
    assert together == alone
    for cut, whole in zip(together, free, strict=True):
        assert whole["completion"].startswith(cut["completion"])
        assert stop[0] not in cut["completion"]
        assert (cut["finish_reason"] == "stop") == (stop[0] in whole["completion"])
    assert 0 < sum(r["finish_reason"] == "stop" for r in together) < len(PROMPTS)


def streamed(model: Any, tokenizer: Any, prompt: str, **kw: Any) -> tuple[list[str], dict]:
    pieces: list[str] = []
    args = {"max_new_tokens": 12, "batch_size": 1, "seed": 0} | kw
    [row] = generate(model, tokenizer, [prompt], Generation(**args), stream=pieces.append)
    return pieces, row


def test_streamed_pieces_are_the_completion(alphabet_gpt: Any, gpt_tokenizer: Any) -> None:
    pieces, row = streamed(alphabet_gpt, gpt_tokenizer, "c d")
    assert pieces == [" e", " f", " g", " h", " i", " j", " k", " l"]  # one per token, EOS adds nothing
    assert "".join(pieces) == row["completion"] == " e f g h i j k l"
    # The stop string is never written, not even the part of it that was generated first.
    pieces, row = streamed(alphabet_gpt, gpt_tokenizer, "c d", stop=("g h",))
    assert pieces == [" e", " f", " "] and row["completion"] == " e f "
    with pytest.raises(ValueError, match="exactly one prompt, got 2"):
        generate(alphabet_gpt, gpt_tokenizer, ["a", "b"], Generation(), stream=print)


def metaspace_tokenizer() -> Any:
    """SentencePiece-like: every word piece carries its leading space as "▁", which decoding a
    piece alone drops (decode(["▁dog"]) == "dog")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<s>", "</s>", "<unk>", *(f"\u2581{w}" for w in WORDS + LETTERS), "s", "ed", ","]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def byte_tokenizer() -> Any:
    """GPT-2-like byte-level BPE with single-byte tokens, so a random model emits partial UTF-8."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["café naïve 日本語 über 😀 the cat sat"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def test_streaming_keeps_sentencepiece_spaces_and_whole_characters() -> None:
    meta = metaspace_tokenizer()
    assert meta.decode(meta.convert_tokens_to_ids(["\u2581dog"])) == "dog"
    model = tiny_gpt(meta, 2, tie_word_embeddings=False, initializer_range=0.2).eval()
    for prompt in ["the cat", "a b c", "dog"]:
        pieces, row = streamed(model, meta, prompt)
        assert "".join(pieces) == row["completion"]
        # one piece per token, each with its own space ("ed" has none): what the vocabulary says
        new = until_eos(transformers_alone(model, meta, prompt, 12), meta.eos_token_id)
        tokens = [t for t in meta.convert_ids_to_tokens(new) if t != meta.eos_token]
        assert pieces == [t.replace("\u2581", " ") for t in tokens] and len(pieces) > 1

    byte = byte_tokenizer()
    model = tiny_gpt(byte, 3, tie_word_embeddings=False, initializer_range=0.2).eval()
    texts = []
    for seed in range(6):  # sampled, so the bytes vary: split characters, invalid sequences
        pieces, row = streamed(model, byte, "café 日本", do_sample=True, seed=seed, max_new_tokens=16)
        # a character split over tokens is held back until whole: nothing written is ever rewritten
        assert "".join(pieces) == row["completion"] and len(pieces) > 1
        texts.append(row["completion"])
    assert any(any(ord(c) > 127 and c != "\ufffd" for c in t) for t in texts)  # some whole non-ASCII


def test_predict_config_keys_reach_generation(tmp_path: Path) -> None:
    from ptft_cli import config
    from ptft_cli.errors import ConfigError
    from ptft_cli.tasks.lm import generation_settings

    path = tmp_path / "c.yaml"
    path.write_text('output_dir: o\npredict: {stop: ["\\n\\n", " ", "Q:"], repetition_penalty: 1.2}\n')
    settings = generation_settings(config.load(path))
    assert settings.stop == ("\n\n", " ", "Q:") and settings.repetition_penalty == 1.2
    assert generation_settings(config.load(path, ["predict.stop=[]"])).stop == ()
    with pytest.raises(ConfigError, match=r"predict\.stop.*must not be empty"):
        config.load(path, ['predict.stop=["Q:", ""]'])
    with pytest.raises(ConfigError, match=r"predict\.stop.*expected a list of string"):
        config.load(path, ["predict.stop=Q"])
    with pytest.raises(ConfigError, match=r"predict\.repetition_penalty.*must be > 0"):
        config.load(path, ["predict.repetition_penalty=0"])


@pytest.fixture
def saved_alphabet(alphabet_gpt: Any, gpt_tokenizer: Any, tmp_path: Path) -> Path:
    """The trained alphabet model as a model directory, and a clm config that predicts with it."""
    alphabet_gpt.save_pretrained(tmp_path / "model")
    gpt_tokenizer.save_pretrained(tmp_path / "model")
    path = tmp_path / "clm.yaml"
    path.write_text(
        f"task: clm\noutput_dir: run\ndevice: cpu\nprecision: fp32\n"
        f"predict: {{model: {tmp_path / 'model'}, max_new_tokens: 10, stop: ['g h']}}\n"
    )
    return path


def test_cli_streams_one_prompt_to_a_terminal(
    cli: Any, saved_alphabet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptft_cli import console

    monkeypatch.setattr(console, "stdout_is_terminal", lambda: True)
    result = cli("predict", "--config", saved_alphabet, "--prompt", "c d")
    assert result.exit_code == 0, result.output
    assert result.stdout == "c d e f \n"  # the prompt, the completion as it came, the line's end
    assert "c d e f" not in result.stderr and "1 predictions in" in result.stderr  # not shown twice
    [row] = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert row == {"id": 1, "prompt": "c d", "completion": " e f ", "new_tokens": 4, "finish_reason": "stop"}


def test_cli_shows_the_text_once_done_when_stdout_is_not_a_terminal(cli: Any, saved_alphabet: Path) -> None:
    result = cli("predict", "--config", saved_alphabet, "--prompt", "c d", "--set", "predict.stop=[]")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "c d e f g h i j k l\n" in result.stderr


# ---------------------------------------------------------------------------------------------
# Fill-mask


@pytest.fixture(scope="module")
def bert() -> tuple[Any, Any]:
    from tokenizers import processors
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = word_tokenizer(
        ["[PAD]", "<unk>", "[CLS]", "[SEP]", "[MASK]", *WORDS, *LETTERS],
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    # BERT's [CLS] text [SEP] framing, as the MLM task trains with.
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return BertForMaskedLM(config).eval(), tokenizer


def test_fill_mask_scores_are_the_softmax_at_the_mask(bert: tuple[Any, Any]) -> None:
    model, tok = bert
    texts = ["the [MASK] sat on the [MASK]", "[MASK] ran", "a b c d e f [MASK] h"]
    out = fill_mask(model, tok, texts, top_k=3, batch_size=2)
    assert [r["text"] for r in out] == texts
    for text, r in zip(texts, out, strict=True):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            probs = model(**enc).logits[0].softmax(-1)
        ids = enc["input_ids"][0].tolist()
        positions = [p for p, t in enumerate(ids) if t == tok.mask_token_id]
        assert [m["position"] for m in r["masks"]] == positions
        for m in r["masks"]:
            scores = [p["score"] for p in m["predictions"]]
            assert len(scores) == 3 and scores == sorted(scores, reverse=True)
            want, want_ids = probs[m["position"]].topk(3)
            assert [p["token_id"] for p in m["predictions"]] == want_ids.tolist()
            torch.testing.assert_close(torch.tensor(scores), want, atol=1e-5, rtol=0)
            assert [p["token"] for p in m["predictions"]] == [tok.decode([i]) for i in want_ids.tolist()]
            ids[m["position"]] = m["predictions"][0]["token_id"]
        assert r["filled"] == tok.decode(ids, skip_special_tokens=True)
    assert len(out[0]["masks"]) == 2 and "[MASK]" not in out[0]["filled"]


def test_fill_mask_is_independent_of_batching(bert: tuple[Any, Any]) -> None:
    model, tok = bert
    texts = ["the cat sat on the [MASK]", "[MASK]", "dog [MASK] on a b c"]
    one = fill_mask(model, tok, texts, top_k=2, batch_size=1)
    together = fill_mask(model, tok, texts, top_k=2, batch_size=3)
    for a, b in zip(one, together, strict=True):
        assert a["filled"] == b["filled"]
        for ma, mb in zip(a["masks"], b["masks"], strict=True):
            assert [p["token_id"] for p in ma["predictions"]] == [p["token_id"] for p in mb["predictions"]]
            assert ma["predictions"][0]["score"] == pytest.approx(mb["predictions"][0]["score"], abs=1e-5)


def test_fill_mask_refuses_texts_without_a_mask(bert: tuple[Any, Any], gpt_tokenizer: Any) -> None:
    model, tok = bert
    with pytest.raises(ValueError, match=r"text 2 has no \[MASK\]"):
        fill_mask(model, tok, ["the [MASK]", "the cat"], top_k=1, batch_size=2)
    with pytest.raises(ValueError, match="no mask token"):
        fill_mask(model, gpt_tokenizer, ["the cat"], top_k=1, batch_size=2)


def test_fill_mask_with_a_saved_bert_tokenizer(tiny_bert: Any) -> None:
    """The conftest BERT: a real BertTokenizerFast (lower-casing WordPiece) loaded from disk."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model, tok = AutoModelForMaskedLM.from_pretrained(tiny_bert), AutoTokenizer.from_pretrained(tiny_bert)
    [out] = fill_mask(model, tok, ["The film was [MASK]"], top_k=50, batch_size=8)
    [m] = out["masks"]
    assert m["position"] == 4  # [CLS] the film was [MASK]
    assert len(m["predictions"]) == 50 and sum(p["score"] for p in m["predictions"]) <= 1 + 1e-6
    top = m["predictions"][0]["token"]
    assert out["filled"] == f"the film was {top}"  # lower-cased, [CLS] and [SEP] dropped
