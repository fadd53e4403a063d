"""Training a tokenizer from scratch on a corpus, for pretraining a model that has none yet.

The result is a plain transformers fast tokenizer: `save_pretrained(dir)` writes a `tokenizer.json` that
`AutoTokenizer.from_pretrained(dir)` loads back unchanged, so nothing downstream needs ptft to read it.
Three kinds: byte-level BPE (GPT-2 style), WordPiece (BERT style) and one token per character.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

KINDS = ("bpe", "wordpiece", "char")

# Vocabulary order of the special tokens: pad first, so padding is id 0 as in BERT.
ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")

# model_type values (normalised to lower case with "_") by the special tokens their tokenizers use.
BERT_LIKE = {
    "bert",
    "electra",
    "distilbert",
    "mobilebert",
    "megatron_bert",
    "convbert",
    "squeezebert",
    "funnel",
    "roformer",
    "modernbert",
    "deberta",
    "deberta_v2",
}
ROBERTA_LIKE = {
    "roberta",
    "roberta_prelayernorm",
    "xlm_roberta",
    "camembert",
    "longformer",
    "data2vec_text",
    "mpnet",
}

# A byte-level BPE starts from one token per byte, so it can encode any text without an unknown token.
BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()
CONTINUING_PREFIX = "##"
# Repetitions of a word per string when re-feeding word counts, to bound the size of any one string.
REPEAT_CHUNK = 10_000


def special_tokens_for(architecture: str) -> dict[str, str]:
    """Default special tokens per architecture family, as role -> token string.

    `architecture` is a model_type such as "bert", "xlm-roberta" or "gpt2"; unknown ones are treated as
    decoders, which need only bos/eos, unk and pad.
    """
    family = architecture.lower().replace("-", "_")
    if family in BERT_LIKE:
        return {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    if family in ROBERTA_LIKE:
        return {
            "bos": "<s>",
            "pad": "<pad>",
            "eos": "</s>",
            "unk": "<unk>",
            "mask": "<mask>",
            "cls": "<s>",
            "sep": "</s>",
        }
    return {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|unk|>", "pad": "<|pad|>"}


@dataclass(frozen=True)
class TokenizerSpec:
    """What tokenizer to train (`tokenizer.*` of the config)."""

    kind: str  # bpe | wordpiece | char
    vocab_size: int
    special_tokens: dict[str, str]  # role -> token
    min_frequency: int = 2
    lowercase: bool = False
    model_max_length: int = 512
    add_cls_sep: bool = False


def train_tokenizer(texts: Iterable[str], spec: TokenizerSpec) -> PreTrainedTokenizerFast:
    """Train a `spec.kind` tokenizer on `texts`, read once as a stream, and wrap it for transformers.

    The special tokens take the first ids, in ROLES order. With `add_cls_sep`, encoding adds
    `[cls] A [sep]` and `[cls] A [sep] B [sep]` (token_type_ids 0 then 1); otherwise encoding adds
    nothing. `min_frequency` is the fewest occurrences of a pair to merge it (bpe, wordpiece); "char"
    keeps every character that fits in `vocab_size`. Raises ValueError for an unknown kind, a vocab_size too small for the specials (or for the
    256 byte tokens of "bpe"), a corpus with no text, or missing roles the kind needs.
    """
    kind, vocab_size, special_tokens = spec.kind, spec.vocab_size, spec.special_tokens
    min_frequency, lowercase, add_cls_sep = spec.min_frequency, spec.lowercase, spec.add_cls_sep
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    unknown_roles = sorted(set(special_tokens) - set(ROLES))
    if unknown_roles:
        raise ValueError(f"unknown special token roles {unknown_roles}; expected some of {', '.join(ROLES)}")
    specials = ordered_specials(special_tokens)
    if vocab_size <= len(specials):
        raise ValueError(f"vocab_size {vocab_size} is not larger than the {len(specials)} special tokens")
    if kind in ("wordpiece", "char") and "unk" not in special_tokens:
        raise ValueError(f"a {kind} tokenizer needs an unk special token for text it has no pieces for")
    if add_cls_sep and not {"cls", "sep"} <= special_tokens.keys():
        raise ValueError("add_cls_sep needs both cls and sep special tokens")

    corpus = NonEmpty(texts)
    if kind == "bpe":
        backend = train_bpe(corpus, vocab_size, specials, min_frequency, lowercase)
    elif kind == "wordpiece":
        backend = train_wordpiece(
            corpus, vocab_size, specials, special_tokens["unk"], min_frequency, lowercase
        )
    else:
        backend = train_char(corpus, vocab_size, specials, special_tokens["unk"], lowercase)
    if not corpus.seen_text:
        raise ValueError("no text to train a tokenizer on")

    # Segment ids only mean something with the cls/sep template (decoders take no token_type_ids).
    input_names = (
        ["input_ids", "token_type_ids", "attention_mask"] if add_cls_sep else ["input_ids", "attention_mask"]
    )
    # Set explicitly in both cases: with no post-processor, transformers installs its own bos/eos template.
    backend.post_processor = cls_sep_template(backend, special_tokens) if add_cls_sep else plain_template()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=spec.model_max_length,
        # The clean-up strips spaces before punctuation: right for WordPiece, which decodes with spaces
        # between words, but it would break the exact round trip of the other two kinds.
        clean_up_tokenization_spaces=kind == "wordpiece",
        model_input_names=input_names,
        **{f"{role}_token": token for role, token in special_tokens.items()},
    )


def fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """sha256 hex digest of what decides how text becomes ids: the backend tokenizer (normalizer,
    pre-tokenizer, model, post-processor, added tokens), the special token roles and model_max_length."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    # transformers switches padding and truncation on the backend for each call; they are call options,
    # not part of the tokenizer, and must not change the digest.
    backend.pop("padding", None)
    backend.pop("truncation", None)
    state = {
        "backend": backend,
        "special_tokens": {role: getattr(tokenizer, f"{role}_token") for role in ROLES},
        "model_max_length": tokenizer.model_max_length,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def ordered_specials(special_tokens: dict[str, str]) -> list[str]:
    """The distinct special token strings in ROLES order (roberta's cls and bos are the same "<s>")."""
    return list(dict.fromkeys(special_tokens[role] for role in ROLES if role in special_tokens))


class NonEmpty:
    """The texts with empty ones dropped, remembering whether any were left: the trainers accept an
    empty corpus without complaint and return a vocabulary of special tokens only."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.seen_text = False

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if text:
                self.seen_text = True
                yield text


def train_bpe(
    corpus: Iterable[str], vocab_size: int, specials: list[str], min_frequency: int, lowercase: bool
) -> Tokenizer:
    if vocab_size < len(BYTE_ALPHABET) + len(specials):
        raise ValueError(
            f"vocab_size {vocab_size} is too small for a byte-level BPE tokenizer: it needs "
            f"{len(BYTE_ALPHABET)} byte tokens plus the {len(specials)} special tokens"
        )
    # No unk token in the model: every byte has a token, so there is nothing to be unknown.
    tokenizer = Tokenizer(models.BPE())
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=BYTE_ALPHABET,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def train_wordpiece(
    corpus: Iterable[str],
    vocab_size: int,
    specials: list[str],
    unk: str,
    min_frequency: int,
    lowercase: bool,
) -> Tokenizer:
    """BERT-style WordPiece, trained reproducibly.

    tokenizers' WordPiece trainer numbers the "##x" pieces in hash-map order, which differs from run to
    run, and uses those ids to break ties between equally frequent merges: the same corpus can give a
    different vocabulary each time (huggingface/tokenizers#1794). So we count the words first, then train
    on the counts with the alphabet and every "##x" piece fixed up front in sorted order.
    """
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = count_words(corpus, normalizer, pre_tokenizer)
    alphabet, continuing = wordpiece_alphabet(counts, vocab_size - len(specials))

    # The words are already normalised and split, so training only needs to split on the spaces
    # between repetitions.
    counter = Tokenizer(models.WordPiece(unk_token=unk, continuing_subword_prefix=CONTINUING_PREFIX))
    counter.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        # Declaring the "##x" pieces as (temporary) special tokens gives them sorted ids before training.
        special_tokens=specials + continuing,
        # Our alphabet wins over the trainer's own limit, whose ties between equally rare characters
        # are also broken in hash-map order.
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        continuing_subword_prefix=CONTINUING_PREFIX,
        show_progress=False,
    )
    counter.train_from_iterator(repeat_words(counts), trainer)

    vocab = counter.get_vocab(with_added_tokens=False)
    tokenizer = Tokenizer(
        models.WordPiece(vocab=vocab, unk_token=unk, continuing_subword_prefix=CONTINUING_PREFIX)
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUING_PREFIX)
    tokenizer.add_special_tokens(specials)
    return tokenizer


def count_words(
    corpus: Iterable[str], normalizer: normalizers.Normalizer, pre_tokenizer: pre_tokenizers.PreTokenizer
) -> dict[str, int]:
    """How often each word (after normalising and pre-tokenizing) occurs in the corpus.

    Counted by a WordLevel trainer, which splits and counts in parallel in Rust; tokenizers exposes the
    counts only through the trainer's pickled state.
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.WordLevelTrainer(vocab_size=0, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    state = json.loads(trainer.__getstate__())
    try:
        return state["WordLevelTrainer"]["words"]
    except KeyError as e:  # a tokenizers release that stops pickling the counts
        raise RuntimeError("this tokenizers version does not expose the word counts of its trainer") from e


def wordpiece_alphabet(counts: dict[str, int], budget: int) -> tuple[list[str], list[str]]:
    """The characters to start from and their "##" forms, most frequent first while they fit in
    `budget` (ties by code point), each list sorted by code point.

    A character costs one token, plus one for its "##" form if it ever occurs inside a word.
    """
    frequency: Counter[str] = Counter()
    inside: set[str] = set()
    for word, count in counts.items():
        for char in word:
            frequency[char] += count
        inside.update(word[1:])
    alphabet: list[str] = []
    continuing: list[str] = []
    for char in sorted(frequency, key=lambda c: (-frequency[c], c)):
        cost = 2 if char in inside else 1
        if cost > budget:
            continue
        budget -= cost
        alphabet.append(char)
        if char in inside:
            continuing.append(CONTINUING_PREFIX + char)
    return sorted(alphabet), sorted(continuing)


def repeat_words(counts: dict[str, int]) -> Iterator[str]:
    """Each word as often as it was counted, a bounded number of repetitions per string."""
    for word, count in counts.items():
        for start in range(0, count, REPEAT_CHUNK):
            yield (word + " ") * min(REPEAT_CHUNK, count - start)


def train_char(
    corpus: Iterable[str], vocab_size: int, specials: list[str], unk: str, lowercase: bool
) -> Tokenizer:
    """One token per Unicode character: the specials, then the most frequent characters that fit,
    in code point order."""
    normalizer = normalizers.Lowercase() if lowercase else None
    frequency: Counter[str] = Counter()
    for text in corpus:
        frequency.update(normalizer.normalize_str(text) if normalizer else text)
    chars = [c for c in sorted(frequency, key=lambda c: (-frequency[c], c)) if c not in specials]
    vocab = {token: i for i, token in enumerate(specials + sorted(chars[: vocab_size - len(specials)]))}

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    if normalizer:
        tokenizer.normalizer = normalizer
    # Every character on its own, newlines and spaces included ("." would skip newlines).
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse joins the characters with nothing between them; the default decoder would put spaces.
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def plain_template() -> processors.TemplateProcessing:
    return processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")


def cls_sep_template(tokenizer: Tokenizer, special_tokens: dict[str, str]) -> processors.TemplateProcessing:
    cls, sep = special_tokens["cls"], special_tokens["sep"]
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
