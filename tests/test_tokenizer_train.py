"""Training tokenizers from scratch: what each kind encodes, that plain `AutoTokenizer` reloads it
unchanged, the special tokens, the vocabulary budget, the errors and the fingerprint."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from ptft_cli.data.tokenizer_train import (
    KINDS,
    TokenizerSpec,
    fingerprint,
    special_tokens_for,
    train_tokenizer,
)

SUBJECTS = ["the cat", "a dog", "my neighbour", "the old fisherman", "a small child", "the committee"]
VERBS = ["watched", "followed", "ignored", "painted", "remembered", "questioned"]
OBJECTS = ["the river", "a quiet garden", "the evening train", "an empty house", "the harbour lights"]
TAILS = [".", "!", " again.", " yesterday.", ", slowly.", "\n"]

BERT = special_tokens_for("bert")
GPT2 = special_tokens_for("gpt2")

# Texts the round trips must survive: case, accents, emoji, CJK, tabs, runs of spaces, newlines.
TRICKY = [
    "The cat watched the river.",
    "  two leading spaces and a trailing one ",
    "line one\nline two\n\n\tindented",
    "Naïve café, Straße, Ærøskøbing 😀🚀 日本語のテキスト",
    "zqxj vwkk — rare words, «quotes» & symbols: ~!@#$%^*()",
]


def sentences(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
        for _ in range(n)
    ]


def one_pass(texts: list[str]) -> Iterator[str]:
    """A generator, as a large corpus would be read: it can be consumed only once."""
    yield from texts


def train(kind: str, *, specials: dict[str, str] = GPT2, vocab_size: int = 400, **kwargs):
    spec = TokenizerSpec(kind=kind, vocab_size=vocab_size, special_tokens=specials, **kwargs)
    return train_tokenizer(one_pass(sentences()), spec)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


# --- reloading with plain transformers ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2"])
def test_save_pretrained_reloads_with_autotokenizer_unchanged(kind: str, arch: str, tmp_path: Path) -> None:
    cls_sep = arch != "gpt2"
    tokenizer = train(kind, specials=special_tokens_for(arch), add_cls_sep=cls_sep, model_max_length=128)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)

    assert reloaded.is_fast and tokenizer.is_fast
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    for text in TRICKY + sentences(5, seed=1):
        assert reloaded(text) == tokenizer(text)  # input_ids, attention_mask (and token_type_ids)
        assert reloaded.decode(ids(reloaded, text)) == tokenizer.decode(ids(tokenizer, text))
    assert reloaded("first part", "second part") == tokenizer("first part", "second part")
    assert reloaded.special_tokens_map == tokenizer.special_tokens_map
    assert reloaded.model_max_length == 128
    assert fingerprint(reloaded) == fingerprint(tokenizer)


class OnePassOnly:
    """A corpus that refuses a second reading, as a file streamed from disk by a generator would."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.passes = 0

    def __iter__(self) -> Iterator[str]:
        self.passes += 1
        assert self.passes == 1, "the corpus was read twice"
        return iter(self.texts)


@pytest.mark.parametrize("kind", KINDS)
def test_the_corpus_is_read_once(kind: str) -> None:
    corpus = OnePassOnly(sentences())
    tokenizer = train_tokenizer(corpus, TokenizerSpec(kind=kind, vocab_size=400, special_tokens=GPT2))
    assert corpus.passes == 1 and len(tokenizer) > 3


# --- what each kind encodes ---------------------------------------------------------------------


def test_bpe_round_trips_any_text_without_unknown_tokens() -> None:
    tokenizer = train("bpe")
    unk = tokenizer.unk_token_id
    for text in TRICKY + ["\x00\x7f control bytes", "🏳️‍🌈 zero-width joiner", "ends with newline\n"]:
        encoded = ids(tokenizer, text)
        assert unk not in encoded
        assert tokenizer.decode(encoded) == text


def test_bpe_learns_merges_from_the_corpus() -> None:
    tokenizer = train("bpe")
    # Frequent words become single tokens (Ġ marks a leading space in byte-level BPE).
    assert tokenizer.tokenize("The river watched") == ["The", "Ġriver", "Ġwatched"]
    assert len(tokenizer.tokenize("zqxj")) > 1  # never seen: falls back to smaller pieces


def test_char_round_trips_text_and_its_vocab_is_specials_plus_seen_characters() -> None:
    corpus = sentences()
    tokenizer = train_tokenizer(
        one_pass(corpus), TokenizerSpec(kind="char", vocab_size=1000, special_tokens=GPT2)
    )
    specials = ["<|unk|>", "<|pad|>", "<|endoftext|>"]
    assert set(tokenizer.get_vocab()) == set(specials) | set("".join(corpus))

    text = "The cat  watched\nthe river.\n\n a dog"
    encoded = ids(tokenizer, text)
    assert len(encoded) == len(text)  # one token per character, spaces and newlines included
    assert tokenizer.decode(encoded) == text  # and no spaces put back between them

    unseen = ids(tokenizer, "cat€")
    assert unseen[-1] == tokenizer.unk_token_id and unseen[:3] == ids(tokenizer, "cat")


def test_char_vocab_size_keeps_the_most_frequent_characters() -> None:
    corpus = ["aaaa bbb cc d"] * 3
    tokenizer = train_tokenizer(
        one_pass(corpus), TokenizerSpec(kind="char", vocab_size=6, special_tokens=BERT)
    )
    # 5 specials leave room for one character: "a" (4 a line) beats "b" and " " (3 a line).
    assert len(tokenizer) == 6
    assert ids(tokenizer, "ab") == [tokenizer.convert_tokens_to_ids("a"), tokenizer.unk_token_id]


def test_wordpiece_lowercases_when_asked() -> None:
    lower = train("wordpiece", specials=BERT, lowercase=True)
    assert (
        lower.tokenize("The RIVER Watched")
        == lower.tokenize("the river watched")
        == ["the", "river", "watched"]
    )
    cased = train("wordpiece", specials=BERT, lowercase=False)
    assert cased.tokenize("The river") == ["The", "river"]
    assert cased.tokenize("the RIVER") != ["the", "river"]


def test_wordpiece_splits_rare_words_into_continuation_pieces() -> None:
    tokenizer = train("wordpiece", specials=BERT, lowercase=True)
    pieces = tokenizer.tokenize("fisherwatched")  # not a word of the corpus
    assert len(pieces) > 1 and not pieces[0].startswith("##")
    assert all(piece.startswith("##") for piece in pieces[1:])
    assert tokenizer.decode(ids(tokenizer, "the fisherwatched river")) == "the fisherwatched river"


# --- special tokens -----------------------------------------------------------------------------


def test_add_cls_sep_wraps_single_texts_and_pairs() -> None:
    tokenizer = train("wordpiece", specials=BERT, lowercase=True, add_cls_sep=True)
    single = tokenizer("the river")
    assert tokenizer.convert_ids_to_tokens(single["input_ids"]) == ["[CLS]", "the", "river", "[SEP]"]
    pair = tokenizer("the river", "a dog")
    assert tokenizer.convert_ids_to_tokens(pair["input_ids"]) == [
        "[CLS]",
        "the",
        "river",
        "[SEP]",
        "a",
        "dog",
        "[SEP]",
    ]
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    assert tokenizer.decode(single["input_ids"], skip_special_tokens=True) == "the river"


def test_roberta_specials_wrap_with_s_tags() -> None:
    tokenizer = train("bpe", specials=special_tokens_for("roberta"), add_cls_sep=True)
    tokens = tokenizer.convert_ids_to_tokens(ids(tokenizer, "The river"))
    assert tokens == ["<s>", "The", "Ġriver", "</s>"]


def test_without_cls_sep_encoding_adds_nothing() -> None:
    tokenizer = train("bpe")
    assert ids(tokenizer, "The river") == tokenizer.convert_tokens_to_ids(["The", "Ġriver"])
    assert "token_type_ids" not in tokenizer("The river", "A dog")


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_take_the_first_ids_pad_first(kind: str) -> None:
    bert = train(kind, specials=BERT)
    assert [
        bert.pad_token_id,
        bert.unk_token_id,
        bert.cls_token_id,
        bert.sep_token_id,
        bert.mask_token_id,
    ] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert bert.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert bert.bos_token is None and bert.eos_token is None

    roberta = train(kind, specials=special_tokens_for("roberta"))
    # "<s>" is both cls and bos, "</s>" both sep and eos: each appears once in the vocabulary.
    assert roberta.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    assert roberta.bos_token_id == roberta.cls_token_id == 2 and roberta.eos_token_id == 3

    gpt2 = train(kind, specials=GPT2)
    assert [gpt2.pad_token_id, gpt2.unk_token_id, gpt2.eos_token_id, gpt2.bos_token_id] == [0, 1, 2, 2]


def test_special_tokens_for_each_family() -> None:
    assert special_tokens_for("bert") == special_tokens_for("electra") == special_tokens_for("distilbert")
    assert special_tokens_for("bert")["mask"] == "[MASK]"
    assert special_tokens_for("xlm-roberta") == special_tokens_for("roberta")
    assert special_tokens_for("roberta")["cls"] == "<s>"
    decoder = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|unk|>", "pad": "<|pad|>"}
    for arch in ["gpt2", "llama", "mistral", "qwen2", "gpt_neox", "something_new"]:
        assert special_tokens_for(arch) == decoder


# --- vocabulary budget --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "vocab_size"), [("bpe", 262), ("bpe", 300), ("wordpiece", 30), ("wordpiece", 120)]
)
def test_vocab_size_is_never_exceeded(kind: str, vocab_size: int) -> None:
    tokenizer = train(kind, specials=BERT, vocab_size=vocab_size, min_frequency=1)
    # The corpus has merges enough to fill the budget exactly.
    assert len(tokenizer) == vocab_size


# --- errors -------------------------------------------------------------------------------------


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer kind 'unigram'"):
        train("unigram")


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_size_must_exceed_the_specials(kind: str) -> None:
    with pytest.raises(ValueError, match="vocab_size 5 is not larger than the 5 special tokens"):
        train(kind, specials=BERT, vocab_size=5)
    # roberta's 7 roles are 5 distinct tokens
    with pytest.raises(ValueError, match="vocab_size 4 is not larger than the 5 special tokens"):
        train(kind, specials=special_tokens_for("roberta"), vocab_size=4)


def test_bpe_needs_room_for_every_byte() -> None:
    with pytest.raises(ValueError, match="vocab_size 200 is too small for a byte-level BPE tokenizer"):
        train("bpe", vocab_size=200)


@pytest.mark.parametrize(
    ("kind", "specials", "cls_sep", "message"),
    [
        ("bpe", {"pad": "<pad>", "mask_token": "<mask>"}, False, "unknown special token roles"),
        ("wordpiece", {"pad": "[PAD]"}, False, "a wordpiece tokenizer needs an unk special token"),
        ("char", {"pad": "[PAD]"}, False, "a char tokenizer needs an unk special token"),
        ("bpe", GPT2, True, "add_cls_sep needs both cls and sep special tokens"),
    ],
)
def test_special_tokens_the_settings_need_are_checked(kind, specials, cls_sep, message) -> None:
    with pytest.raises(ValueError, match=message):
        train(kind, specials=specials, add_cls_sep=cls_sep)


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_corpus_is_refused(kind: str) -> None:
    for corpus in ([], ["", "", ""]):
        with pytest.raises(ValueError, match="no text to train a tokenizer on"):
            train_tokenizer(one_pass(corpus), TokenizerSpec(kind=kind, vocab_size=400, special_tokens=GPT2))


# --- fingerprint --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fingerprint_is_equal_for_equal_trainings_and_changes_with_settings(kind: str) -> None:
    base = fingerprint(train(kind, lowercase=False))
    assert fingerprint(train(kind, lowercase=False)) == base
    assert len(base) == 64 and int(base, 16) >= 0
    assert fingerprint(train(kind, lowercase=True)) != base
    assert fingerprint(train(kind, lowercase=False, specials=BERT)) != base
    assert fingerprint(train(kind, lowercase=False, model_max_length=1024)) != base
    smaller = {"bpe": 300, "wordpiece": 120, "char": 30}[kind]  # below what this corpus fills
    assert fingerprint(train(kind, lowercase=False, vocab_size=smaller)) != base


def test_fingerprint_ignores_padding_and_truncation_of_earlier_calls() -> None:
    tokenizer = train("bpe")
    before = fingerprint(tokenizer)
    tokenizer(["the river", "a much longer text than that"], padding=True, truncation=True, max_length=4)
    assert fingerprint(tokenizer) == before


def test_wordpiece_training_is_reproducible() -> None:
    # Random words give many merges of equal frequency; tokenizers' own WordPiece trainer breaks those
    # ties in hash-map order and gives a different vocabulary nearly every run.
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6))) for _ in range(100)]
    corpus = [" ".join(rng.choice(words) for _ in range(10)) for _ in range(100)]
    prints = {
        fingerprint(
            train_tokenizer(
                one_pass(corpus), TokenizerSpec(kind="wordpiece", vocab_size=200, special_tokens=BERT)
            )
        )
        for _ in range(5)
    }
    assert len(prints) == 1
