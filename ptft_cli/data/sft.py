"""Supervised fine-tuning data: records → conversations → token ids with loss masks → packed rows
and padded batches, plus answer extraction for generation metrics.

Pure Python and numpy; torch is imported only when a caller asks `collate` for tensors. The flow a
task module follows:

    table = files.read_table(path)                     # rows, with their line numbers
    examples, stats = encode_table(table, template, tokenizer, options)
    rows = pack(examples, options.max_length)          # optional
    batch = collate(rows[:8], pad_id, "pt")

Only assistant text (and the end-of-turn token closing each assistant turn) is trained: every other
label is -100, the value Hugging Face causal LMs ignore in their loss.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from ptft_cli.data.files import Table
from ptft_cli.errors import ConfigError, DataError

IGNORE = -100  # the label HF causal LMs leave out of the loss

# ---------------------------------------------------------------------------------------------
# Fields: dotted paths with list indices, e.g. `instances[0].output`

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


def parse_path(path: str) -> tuple[str | int, ...]:
    """`instances[0].output` → ("instances", 0, "output"). ValueError on a malformed path."""
    steps: list[str | int] = []
    for part in path.split("."):
        m = _SEGMENT.fullmatch(part.strip())
        if not m:
            raise ValueError(f"malformed field path {path!r}")
        steps.append(m.group(1))
        steps.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(steps)


def _show(steps: Sequence[str | int]) -> str:
    out = ""
    for s in steps:
        out += f"[{s}]" if isinstance(s, int) else (f".{s}" if out else s)
    return out


def get_field(record: dict[str, Any], path: str, where: str) -> Any:
    """The value at `path` in a record; a DataError naming the row (`where`, as `Table.where`
    gives it), the path, and what the record holds at the step that failed."""
    try:
        steps = parse_path(path)
    except ValueError:
        raise DataError(
            f"malformed field path {path!r}",
            where=where,
            hint="use names, dots and list indices, e.g. instances[0].output",
        ) from None
    value: Any = record
    for n, step in enumerate(steps):
        here = _show(steps[:n]) or "the record"
        if isinstance(step, int):
            if not isinstance(value, list):
                raise DataError(
                    f"field {path!r}: {here} is {_kind(value)}, not a list",
                    where=where,
                    hint=f"drop the [{step}]" if isinstance(value, dict) else None,
                )
            if step >= len(value):
                raise DataError(
                    f"field {path!r}: {here} has {len(value)} item(s), no item {step}", where=where
                )
            value = value[step]
        else:
            if not isinstance(value, dict):
                raise DataError(f"field {path!r}: {here} is {_kind(value)}, not an object", where=where)
            if step not in value:
                raise DataError(
                    f"field {path!r}: no {step!r} in {here}",
                    where=where,
                    hint=f"{here} has: {', '.join(map(str, value)) or 'no fields'}",
                )
            value = value[step]
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


# ---------------------------------------------------------------------------------------------
# Templates: how a record becomes a conversation

# `{field.path}`, with `{{` and `}}` for literal braces.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def placeholders(fmt: str) -> list[str]:
    """The field paths a format string names, in order."""
    return [m.group(1).strip() for m in _PLACEHOLDER.finditer(fmt) if m.group(1) is not None]


@dataclass(frozen=True)
class Template:
    """How a record becomes a conversation.

    Either `prompt` + `response` format strings (the user message and the assistant reply), or
    `messages`: the path of a field holding a chat, a list of {"role", "content"} objects. `system`
    adds a system message (unless the record's chat already starts with one).

    `prompt` may list alternatives: the first whose placeholders are all non-empty in a record is
    used (the last one always), so an optional field such as Alpaca's `input` can drop its whole
    section when empty instead of leaving a dangling header.
    """

    prompt: tuple[str, ...] = ()
    response: str | None = None
    messages: str | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str):  # a single format string is the common case
            object.__setattr__(self, "prompt", (self.prompt,))
        if (self.messages is None) == (self.response is None):
            raise ConfigError(
                "an sft template needs either prompt + response, or messages",
                hint="e.g. prompt: '{question}', response: '{answer}'; or messages: messages",
            )
        if self.response is not None and not self.prompt:
            raise ConfigError(
                "an sft template with a response needs a prompt", hint="e.g. prompt: '{question}'"
            )
        for fmt in (*self.prompt, self.response or ""):
            for path in placeholders(fmt):
                try:
                    parse_path(path)
                except ValueError:
                    raise ConfigError(
                        f"placeholder {{{path}}} in {fmt!r} is not a field path",
                        hint="write {{ and }} for literal braces",
                    ) from None

    def fields(self) -> list[str]:
        """Every field path the template reads."""
        if self.messages is not None:
            return [self.messages]
        return list(
            dict.fromkeys(p for fmt in (*self.prompt, self.response or "") for p in placeholders(fmt))
        )

    def check(self, record: dict[str, Any], where: str) -> None:
        """Every field the template names exists in `record` (run on the first row so a typo in a
        placeholder fails at once, before any tokenizing)."""
        for path in self.fields():
            try:
                get_field(record, path, where)
            except DataError as e:
                label = f"messages field {path!r}" if self.messages else f"placeholder {{{path}}}"
                keys = ", ".join(map(str, record)) or "no fields"
                raise DataError(
                    f"the template's {label} names no field of the data ({e.message})",
                    where=where,
                    hint=f"the first record has: {keys}",
                ) from None

    def conversation(self, record: dict[str, Any], where: str) -> list[dict[str, str]]:
        """The record as chat messages: [system], user, assistant (or the record's own chat)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        if self.messages is not None:
            chat = _chat(get_field(record, self.messages, where), self.messages, where)
            return chat if chat[0]["role"] == "system" else system + chat
        prompt = choose_prompt(self.prompt, record, where)
        response = _render(self.response or "", record, where, response=True)
        if not response.strip():
            raise DataError(
                f"empty response (template {self.response!r})",
                where=where,
                hint="drop rows without a response from the data",
            )
        return [*system, {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def alpaca_template(
    instruction: str = "instruction", input: str = "input", output: str = "output"
) -> Template:
    """The Stanford Alpaca prompt for base models, with its no-input variant, reading the given
    field paths (self-instruct data: "instruction", "instances[0].input", "instances[0].output")."""
    head = "Below is an instruction that describes a task"
    return Template(
        prompt=(
            f"{head}, paired with an input that provides further context. Write a response that "
            f"appropriately completes the request.\n\n### Instruction:\n{{{instruction}}}\n\n"
            f"### Input:\n{{{input}}}\n\n### Response:\n",
            f"{head}. Write a response that appropriately completes the request.\n\n"
            f"### Instruction:\n{{{instruction}}}\n\n### Response:\n",
        ),
        response=f"{{{output}}}",
    )


def _text(value: Any, path: str, where: str, *, response: bool) -> str:
    if value is None:
        if response:
            raise DataError(f"field {path!r} is null", where=where, hint="every row needs a response")
        return ""  # a missing optional prompt field (csv blank, parquet null) reads as empty
    if isinstance(value, (dict, list)):
        raise DataError(
            f"field {path!r} is {_kind(value)}, not text",
            where=where,
            hint="point the placeholder at a text field inside it, e.g. instances[0].output",
        )
    return str(value)


def _render(fmt: str, record: dict[str, Any], where: str, *, response: bool = False) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]  # `{{` → `{`, `}}` → `}`
        path = m.group(1).strip()
        return _text(get_field(record, path, where), path, where, response=response)

    return _PLACEHOLDER.sub(sub, fmt)


def choose_prompt(alternatives: tuple[str, ...], record: dict[str, Any], where: str) -> str:
    for fmt in alternatives[:-1]:
        values = [_render(f"{{{p}}}", record, where) for p in placeholders(fmt)]
        if all(v.strip() for v in values):
            return _render(fmt, record, where)
    return _render(alternatives[-1], record, where)


def _chat(value: Any, path: str, where: str) -> list[dict[str, str]]:
    """Validate a record's chat: a non-empty list of {role, content} with an assistant reply."""
    if not isinstance(value, list) or not value:
        raise DataError(
            f"field {path!r} is {_kind(value) if value != [] else 'an empty list'}, not a list of messages",
            where=where,
            hint='expected [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]',
        )
    chat = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            got = ", ".join(map(str, m)) if isinstance(m, dict) else _kind(m)
            raise DataError(
                f"{path}[{i}] is not a message (has {got or 'nothing'})",
                where=where,
                hint="each message needs a role and a content",
            )
        content = m["content"]
        if m["role"] == "assistant" and (content is None or not str(content).strip()):
            raise DataError(f"{path}[{i}] is an empty assistant message", where=where)
        chat.append(
            {"role": m["role"], "content": _text(content, f"{path}[{i}].content", where, response=False)}
        )
    if not any(m["role"] == "assistant" for m in chat):
        raise DataError(
            f"field {path!r} has no assistant message to train on",
            where=where,
            hint=f"roles here: {', '.join(m['role'] for m in chat)}",
        )
    return chat


# ---------------------------------------------------------------------------------------------
# Tokenizing with loss masks


@dataclass(frozen=True)
class SftOptions:
    """How conversations become token ids.

    `chat_template`: render with the tokenizer's chat template (else: prompt + response + EOS).
    `train_on_all`: train on every token, prompts included (else only assistant turns).
    `end_of_turn`: the token closing an assistant turn (default: the tokenizer's EOS); trailing
    template text after it (ChatML's newline) is not trained, so decoding stops where generation does.
    `long_prompts`: what to do with a row whose prompt alone fills `max_length`: "error" (name the
    row) or "skip" (leave it out and count it in `SftStats.skipped`).
    """

    max_length: int
    chat_template: bool = True
    train_on_all: bool = False
    end_of_turn: str | None = None
    long_prompts: str = "error"

    def __post_init__(self) -> None:
        if self.long_prompts not in ("error", "skip"):
            raise ConfigError(
                f"long_prompts must be 'error' or 'skip', not {self.long_prompts!r}", key="long_prompts"
            )


@dataclass
class Example:
    """One tokenized conversation: `labels[i]` is `input_ids[i]` where trained, else -100.
    `prompt_tokens`: how many tokens come before the first reply (kept for truncation, since with
    `train_on_all` the labels no longer show it)."""

    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class SftStats:
    """What tokenizing a table did, for the run summary."""

    examples: int = 0  # kept, so not counting `skipped`
    truncated: int = 0  # examples that lost trained tokens to max_length
    skipped: int = 0  # rows left out: their prompt alone filled max_length
    max_length: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    longest: int = 0  # before truncation

    def describe(self) -> str:
        """E.g. '12 of 7,473 responses truncated to fit 384 tokens'."""
        out = f"{self.truncated:,} of {self.examples:,} responses truncated to fit {self.max_length:,} tokens"
        if self.skipped:
            out += f"; {self.skipped:,} rows skipped (the prompt alone fills {self.max_length:,} tokens)"
        return out


def check_tokenizer(tokenizer: Any, options: SftOptions) -> None:
    """Refuse a tokenizer that cannot do what the options ask, before reading any row."""
    if options.chat_template and getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            "the tokenizer has no chat template",
            key="chat_template",
            hint="use a chat (instruct) model's tokenizer, or render prompts with the plain template "
            "(chat_template: false)",
        )
    if _end_of_turn_id(tokenizer, options) is None:
        raise ConfigError(
            "the tokenizer has no EOS token to end each response with",
            key="end_of_turn",
            hint="without one the model never learns to stop; set tokenizer.special_tokens",
        )


def encode_table(
    table: Table, template: Template, tokenizer: Any, options: SftOptions
) -> tuple[list[Example], SftStats]:
    """Every row of `table` as an Example (truncated to `options.max_length`), and the counts."""
    check_tokenizer(tokenizer, options)
    if table.rows:
        template.check(table.rows[0], table.where(0))
    stats = SftStats(max_length=options.max_length)
    examples = []
    for i, record in enumerate(table.rows):
        where = table.where(i)
        full = encode(template.conversation(record, where), tokenizer, options, where)
        if full.prompt_tokens >= options.max_length and options.long_prompts == "skip":
            stats.skipped += 1
            continue
        example = truncate(full, options.max_length, where)
        stats.examples += 1
        # Only a cut that loses trained tokens counts (not ChatML's untrained closing newline).
        stats.truncated += any(label != IGNORE for label in full.labels[len(example) :])
        stats.tokens += len(example)
        stats.trained_tokens += sum(label != IGNORE for label in example.labels)
        stats.longest = max(stats.longest, len(full))
        examples.append(example)
    return examples, stats


def encode(conversation: list[dict[str, str]], tokenizer: Any, options: SftOptions, where: str) -> Example:
    """A conversation as token ids and labels, untruncated."""
    if options.chat_template:
        ids, spans = _chat_spans(conversation, tokenizer, _end_of_turn_id(tokenizer, options), where)
    else:
        ids, spans = _plain_spans(conversation, tokenizer, _end_of_turn_id(tokenizer, options), where)
    prompt_tokens = spans[0][0]
    if options.train_on_all:
        return Example(ids, list(ids), prompt_tokens)
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        labels[start:end] = ids[start:end]
    return Example(ids, labels, prompt_tokens)


def truncate(example: Example, max_length: int, where: str) -> Example:
    """Cut the tail of the response to fit `max_length`; a prompt that leaves no room for any
    response token is an error (silently training on nothing would hide the problem)."""
    if example.prompt_tokens >= max_length:
        raise DataError(
            f"the prompt is {example.prompt_tokens:,} tokens, max_length is {max_length:,}: "
            "no room for the response",
            where=where,
            hint="raise tokenizer.max_length or shorten the prompt (or skip such rows: long_prompts: skip)",
        )
    if len(example) <= max_length:
        return example
    return Example(example.input_ids[:max_length], example.labels[:max_length], example.prompt_tokens)


def _end_of_turn_id(tokenizer: Any, options: SftOptions) -> int | None:
    if options.end_of_turn is None:
        return tokenizer.eos_token_id
    token_id = tokenizer.convert_tokens_to_ids(options.end_of_turn)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(
            f"end_of_turn {options.end_of_turn!r} is not a token of the tokenizer",
            key="end_of_turn",
            hint="name a single special token, e.g. <|im_end|>",
        )
    return token_id


def _ids(tokenizer: Any, text: str) -> list[int]:
    # Chat templates write their own BOS/special tokens, so none are added here (as HF does).
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _render_chat(tokenizer: Any, messages: list[dict[str, str]], generation: bool, where: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except Exception as e:  # jinja raises TemplateError for e.g. "roles must alternate"
        raise DataError(
            f"the chat template refuses this conversation: {str(e).splitlines()[0] if str(e) else e!r}",
            where=where,
            hint="check the roles and their order",
        ) from None


def _chat_spans(
    conversation: list[dict[str, str]], tokenizer: Any, end_of_turn: int | None, where: str
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the rendered conversation and the [start, end) spans of assistant replies.

    The template is rendered on growing prefixes: messages[:k] with the generation prompt ends
    where reply k starts, messages[:k+1] ends where it ends. That holds only if each rendering is
    a text prefix of the whole conversation's (templates that rewrite earlier turns, e.g. drop past
    reasoning, break it), so that is checked, not assumed. In tokens, a boundary is where the
    prefix's ids stop agreeing with the whole's: a BPE merge across the boundary (a reply starting
    with a newline) then counts the merged token with the reply.
    """
    full_text = _render_chat(tokenizer, conversation, False, where)
    full = _ids(tokenizer, full_text)
    spans = []
    for k, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        if k == 0:
            raise DataError(
                "the conversation starts with an assistant message: there is no prompt to answer",
                where=where,
            )
        bounds = []
        for prefix, generation in ((conversation[:k], True), (conversation[: k + 1], False)):
            text = _render_chat(tokenizer, prefix, generation, where)
            if not full_text.startswith(text):
                at = _common_prefix(list(text), list(full_text))
                raise DataError(
                    f"the chat template does not render messages[:{len(prefix)}] as a prefix of the whole "
                    f"conversation (they differ at character {at}: {text[at : at + 30]!r} vs "
                    f"{full_text[at : at + 30]!r}), so reply {k} cannot be located",
                    where=where,
                    hint="use chat_template: false (plain prompt + response), or a template that renders "
                    "earlier turns the same way whatever follows",
                )
            bounds.append(_common_prefix(_ids(tokenizer, text), full))
        start, end = bounds
        # Stop after the reply's end-of-turn token: what a template writes after it (a newline)
        # is never generated, so training on it would teach nothing useful.
        closing = [i for i in range(start, end) if full[i] == end_of_turn]
        spans.append((start, closing[-1] + 1 if closing else end))
    return full, spans


def _plain_spans(
    conversation: list[dict[str, str]], tokenizer: Any, eos: int | None, where: str
) -> tuple[list[int], list[tuple[int, int]]]:
    """[BOS] [system + blank line] prompt | response EOS, the two halves tokenized apart so the
    boundary is exact (the prompt format carries its own separator, e.g. '### Response:\\n')."""
    roles = [m["role"] for m in conversation]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise DataError(
            f"the plain template takes one prompt and one reply, not a {len(roles)}-message chat "
            f"({', '.join(roles)})",
            where=where,
            hint="render chats with the tokenizer's chat template (chat_template: true)",
        )
    system = conversation[0]["content"] + "\n\n" if roles[0] == "system" else ""
    prompt = _leading_special_ids(tokenizer) + _ids(tokenizer, system + conversation[-2]["content"])
    response = _ids(tokenizer, conversation[-1]["content"]) + ([eos] if eos is not None else [])
    return prompt + response, [(len(prompt), len(prompt) + len(response))]


def _leading_special_ids(tokenizer: Any) -> list[int]:
    """The ids a tokenizer puts before any text (Llama's BOS; nothing for GPT-2 or SmolLM2)."""
    bare = _ids(tokenizer, "a")
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i]
    return []


# ---------------------------------------------------------------------------------------------
# Packing


@dataclass
class Packed:
    """Several examples in one row. `position_ids` restart at 0 for each example, which is how
    transformers finds the example boundaries (flash attention's varlen path, and the block-causal
    mask it builds for sdpa/eager when `attention_mask` is None), so no example attends to another.
    The model must be called with `use_cache=False`: with a cache (the default for most configs,
    even in training) transformers 5 skips that detection and attention crosses examples."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    lengths: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def cu_seqlens(self) -> list[int]:
        """Example boundaries as cumulative offsets: [0, len0, len0 + len1, ...]."""
        return [0, *np.cumsum(self.lengths).tolist()]


def pack(examples: Sequence[Example], max_length: int) -> list[Packed]:
    """Best-fit packing in the given order: each example goes into the fullest row it still fits
    (a new row when none has room). Deterministic; shuffle `examples` first for a new order per
    epoch. Rows are returned in the order they were opened."""
    rows: list[list[Example]] = []
    room: list[tuple[int, int]] = []  # (space left, row index), sorted, for rows not yet full
    for ex in examples:
        n = len(ex)
        if n > max_length:
            raise ValueError(
                f"an example of {n} tokens is longer than max_length {max_length}: truncate first"
            )
        i = bisect.bisect_left(room, (n, -1))
        if i == len(room):
            rows.append([ex])
            space, index = max_length - n, len(rows) - 1
        else:
            space, index = room.pop(i)
            rows[index].append(ex)
            space -= n
        if space > 0:
            bisect.insort(room, (space, index))
    return [_join(row) for row in rows]


def _join(row: list[Example]) -> Packed:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for ex in row:
        ids += ex.input_ids
        # HF shifts labels inside the model: label[i] is predicted from token i-1. For an example's
        # first token, token i-1 is the previous example's last, so it must not be trained.
        labels += [IGNORE, *ex.labels[1:]]
        positions += range(len(ex))
    return Packed(ids, labels, positions, [len(ex) for ex in row])


def fill_rate(rows: Sequence[Packed], max_length: int) -> float:
    """The fraction of row capacity holding real tokens (1.0: no padding at all)."""
    return sum(len(r) for r in rows) / max(1, len(rows) * max_length)


# ---------------------------------------------------------------------------------------------
# Batches


def collate(
    examples: Sequence[Example | Packed],
    pad_id: int,
    return_tensors: str = "np",
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """Right-pad examples into a batch: input_ids (pad_id), labels (-100), and `lengths` (tokens
    per row, for length-grouped sampling and token counts).

    Plain examples get an `attention_mask`. Packed rows get `position_ids` and no attention_mask:
    transformers only honours position-id boundaries when the mask is absent. Their padding gets
    positions 0, 1, ... of its own, so it is one more (untrained) segment that no example sees.
    `return_tensors`: "np" (int64 arrays) or "pt" (torch tensors).
    """
    lengths = [len(e) for e in examples]
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch = {
        "input_ids": np.full((len(examples), width), pad_id, dtype=np.int64),
        "labels": np.full((len(examples), width), IGNORE, dtype=np.int64),
    }
    packed = isinstance(examples[0], Packed)
    if packed:
        batch["position_ids"] = np.zeros((len(examples), width), dtype=np.int64)
    else:
        batch["attention_mask"] = np.zeros((len(examples), width), dtype=np.int64)
    for row, (ex, n) in enumerate(zip(examples, lengths)):
        batch["input_ids"][row, :n] = ex.input_ids
        batch["labels"][row, :n] = ex.labels
        if packed:
            batch["position_ids"][row, :n] = ex.position_ids
            batch["position_ids"][row, n:] = np.arange(width - n)
        else:
            batch["attention_mask"][row, :n] = 1
    if return_tensors == "pt":
        import torch

        batch = {k: torch.from_numpy(v) for k, v in batch.items()}
    elif return_tensors != "np":
        raise ValueError(f"return_tensors must be 'np' or 'pt', not {return_tensors!r}")
    return {**batch, "lengths": lengths}


# ---------------------------------------------------------------------------------------------
# Answers, for generation metrics

GSM8K_ANSWER = r"####\s*(-?[\d,\.]+)"


def normalize_number(text: str) -> str:
    """'1,234.50' → '1234.5', '72.' → '72', '10.0' → '10'; text that is no number comes back stripped."""
    s = text.strip().replace(",", "").rstrip(".")
    if not s:
        return ""  # only punctuation: no number at all
    try:
        d = Decimal(s)
    except InvalidOperation:
        return text.strip()
    if not d.is_finite():
        return text.strip()
    out = format(d.normalize(), "f")
    return "0" if out in ("-0", "0") else out


def extract_answer(text: str, pattern: str = GSM8K_ANSWER) -> str | None:
    """The first match of `pattern` in `text` (its first group if it has one), as a normalized
    number when it is one; None when the answer format is absent."""
    m = re.search(pattern, text)
    if m is None:
        return None
    value = normalize_number(m.group(1) if m.re.groups else m.group(0))
    return value or None


def exact_match(predicted: Sequence[str | None], reference: Sequence[str | None]) -> float:
    """The fraction of extracted answers equal to the reference's (a missing answer never matches)."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    hits = sum(p is not None and p == r for p, r in zip(predicted, reference))
    return hits / max(1, len(predicted))


def format_rate(predicted: Sequence[str | None]) -> float:
    """The fraction of generations in which the answer format was found at all."""
    return sum(p is not None for p in predicted) / max(1, len(predicted))


# ---------------------------------------------------------------------------------------------
# Prompts for generation: what the model saw before its reply during training


def generation_prompt(conversation: list[dict[str, str]], tokenizer: Any, options: SftOptions) -> str:
    """The text that precedes the assistant's reply to the conversation's last user message, as
    training rendered it: the chat template with its generation prompt, or the plain template's
    [BOS] [system + blank line] prompt. (Special tokens appear as text; the tokenizer reads them back.)"""
    # the reply to predict (a record's own answer) is left out
    messages = conversation[:-1] if conversation[-1]["role"] == "assistant" else conversation
    if options.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = messages[0]["content"] + "\n\n" if messages[0]["role"] == "system" else ""
    bos = tokenizer.decode(_leading_special_ids(tokenizer))
    return bos + system + messages[-1]["content"]
