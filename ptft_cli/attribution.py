"""Why a classifier chose its label: per-token Integrated Gradients and attention rollout.

    integrated_gradients   Sundararajan et al. 2017, through captum (an optional extra): the gradient of
                           the predicted class's probability, integrated along a straight path from a
                           baseline to the input embeddings, summed over the embedding width per token.
                           Attributions add up to p(input) - p(baseline) up to the convergence delta.
    attention_rollout      Abnar & Zuidema 2020: per layer, the head-averaged attention plus the residual
                           (0.5 A + 0.5 I, rows renormalised), multiplied through the layers; the row of
                           the token the classifier reads says how much each input token flows into it.

One text at a time (no padding to mask out); torch and captum are imported only inside functions, so
`ptft validate` stays torch-free. The HTML page is `explain_page.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ptft_cli.config import Config
from ptft_cli.errors import ConfigError

IG = "integrated_gradients"
ROLLOUT = "attention_rollout"


@dataclass
class Settings:
    methods: list[str]
    steps: int  # Integrated Gradients' interpolation steps
    baseline: str  # auto | mask | pad | zeros
    batch_size: int  # interpolation points per forward pass
    max_length: int


def check(cfg: Config) -> list[ConfigError]:
    """`explain.*` rules the schema cannot state; captum present when Integrated Gradients is asked for."""
    e, problems = cfg.explain, []
    if not e.methods:
        problems.append(
            ConfigError(
                "no attribution method chosen",
                where=cfg.where("explain.methods"),
                key="explain.methods",
                hint=f"list one or both of {IG}, {ROLLOUT}",
            )
        )
    if e.text is not None and e.input is not None:
        both = "explain.text" if "explain.text" in cfg.overridden else "explain.input"
        problems.append(
            ConfigError(
                "explain.text and explain.input are both set",
                where=cfg.where(both),
                key=both,
                hint="explain one text (--text) or a file (--input), not both",
            )
        )
    if e.text is not None and not e.text.strip():
        problems.append(ConfigError("the text is empty", where=cfg.where("explain.text"), key="explain.text"))
    if IG in e.methods:
        try:
            import captum.attr  # noqa: F401
        except ImportError:
            problems.append(
                ConfigError(
                    "Integrated Gradients needs captum, which is not installed",
                    where=cfg.where("explain.methods"),
                    key="explain.methods",
                    hint=f"pip install 'ptft[explain]' (or pip install captum), or set explain.methods: [{ROLLOUT}]",
                )
            )
    return problems


def settings(cfg: Config) -> Settings:
    e = cfg.explain
    methods = list(dict.fromkeys(e.methods))  # in the order given, once each
    return Settings(methods, e.steps, e.baseline, cfg.training.eval_batch_size, cfg.tokenizer.max_length)


def check_tokenizer(cfg: Config, tokenizer: Any) -> None:
    """The baseline token must exist (a GPT-2 style tokenizer has no mask token)."""
    if cfg.explain.baseline == "mask" and IG in cfg.explain.methods and tokenizer.mask_token_id is None:
        raise ConfigError(
            "the model's tokenizer has no mask token",
            where=cfg.where("explain.baseline"),
            key="explain.baseline",
            hint="use baseline: pad or zeros",
        )


def explain(
    model: Any,
    tokenizer: Any,
    texts: tuple[list[str], list[str] | None, list[Any]],
    s: Settings,
    progress: Callable[[int], None],
) -> list[dict[str, Any]]:
    """One record per text: tokens (special ones marked), the predicted label, class probabilities,
    and each method's per-token scores (jsonl-ready)."""
    import torch

    texts_, pairs, ids = texts
    model.eval()
    device = next(model.parameters()).device
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    rows = []
    for i, text in enumerate(texts_):
        enc = tokenizer(
            text,
            pairs[i] if pairs else None,
            truncation=True,
            max_length=s.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        special = enc.pop("special_tokens_mask")[0].bool()
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad():
            out = model(**enc, output_attentions=ROLLOUT in s.methods)
        probs = out.logits[0].float().softmax(-1)
        predicted = int(probs.argmax())
        token_ids = enc["input_ids"][0].tolist()
        row: dict[str, Any] = {
            "id": ids[i],
            "text": text,
            **({"text_pair": pairs[i]} if pairs else {}),
            "tokens": tokenizer.convert_ids_to_tokens(token_ids),
            "token_ids": token_ids,
            "special": special.tolist(),
            "label": labels[predicted],
            "score": float(probs[predicted]),
            "probabilities": dict(zip(labels, probs.tolist())),
        }
        for method in s.methods:
            if method == IG:
                attr, delta, p_base = integrated_gradients(
                    model, enc, special.to(device), predicted, s, tokenizer
                )
                row[IG] = attr
                row["ig_convergence_delta"] = delta
                row["ig_baseline"] = baseline_token(s.baseline, tokenizer)
                row["ig_baseline_probability"] = (
                    p_base  # of the predicted class; attributions sum to p - this
                )
            else:
                row[ROLLOUT] = rollout(out.attentions, _read_row(model, tokenizer, token_ids))
        rows.append(row)
        progress(1)
    return rows


def integrated_gradients(
    model: Any, enc: dict[str, Any], special: Any, target: int, s: Settings, tokenizer: Any
) -> tuple[list[float], float, float]:
    """Per-token attributions to the `target` class's probability, the convergence delta (sum of
    attributions minus (p(input) - p(baseline)); near 0 when `steps` suffice) and p(baseline)."""
    import torch
    from captum.attr import IntegratedGradients

    embed = model.get_input_embeddings()
    input_ids = enc["input_ids"]  # (1, T)
    extra = {k: v for k, v in enc.items() if k != "input_ids"}  # attention_mask, token_type_ids
    with torch.no_grad():
        x = embed(input_ids).float()  # (1, T, H)
        if s.baseline == "zeros":
            base = torch.zeros_like(x)
        else:
            # The model still adds position (and segment) embeddings to both ends of the path, and the
            # special tokens stay: the path varies only the words themselves.
            ref = (
                tokenizer.mask_token_id
                if baseline_token(s.baseline, tokenizer) == "mask"
                else tokenizer.pad_token_id
            )
            base = embed(torch.where(special[None], input_ids, torch.full_like(input_ids, ref))).float()

    def forward(embeds: Any) -> Any:  # (n, T, H) -> (n, classes); captum stacks path points in n
        n = embeds.shape[0]
        batch = {k: v.expand(n, -1) for k, v in extra.items()}
        dtype = embed.weight.dtype
        return model(inputs_embeds=embeds.to(dtype), **batch).logits.float().softmax(-1)

    attributions, delta = IntegratedGradients(forward).attribute(
        x,
        baselines=base,
        target=target,
        n_steps=s.steps,
        internal_batch_size=s.batch_size,
        return_convergence_delta=True,
    )
    with torch.no_grad():
        p_base = float(forward(base)[0, target])
    return attributions.sum(-1)[0].tolist(), float(delta[0]), p_base


def baseline_token(baseline: str, tokenizer: Any) -> str:
    """What `auto` means for this tokenizer: mask when it has a mask token, else pad."""
    if baseline == "auto":
        return "mask" if tokenizer.mask_token_id is not None else "pad"
    return baseline


def _read_row(model: Any, tokenizer: Any, token_ids: list[int]) -> int | None:
    """The position whose final state the classification head reads: [CLS] (BERT, RoBERTa's <s>),
    else the last token (GPT-2 style heads); None when the head mean-pools every token (ModernBERT's
    `classifier_pooling: mean`)."""
    if getattr(model.config, "classifier_pooling", None) == "mean":
        return None
    cls = tokenizer.cls_token_id
    return 0 if cls is not None and token_ids and token_ids[0] == cls else len(token_ids) - 1


def rollout(attentions: Any, row: int | None) -> list[float]:
    """Attention rollout: how much each token flows into the `row` token (None: the mean over rows)
    through every layer. A model without attention weights (SDPA, flash) returns none: an error."""
    import torch

    if not attentions or attentions[0] is None:
        raise RuntimeError("the model returned no attention weights; it must run with eager attention")
    t = attentions[0].shape[-1]
    eye = torch.eye(t, device=attentions[0].device)
    flow = eye
    for layer in attentions:  # (1, heads, T, T), first layer first
        a = 0.5 * layer[0].float().mean(0) + 0.5 * eye  # the residual stream carries half
        a = a / a.sum(-1, keepdim=True)
        flow = a @ flow
    scores = flow.mean(0) if row is None else flow[row]
    return scores.tolist()
