"""The self-contained HTML page of `ptft explain`: tokens shaded by attribution, class probabilities.

No network: the CSS is inline, there is no script, font or image to fetch, and every piece of text
(the inputs, tokens, labels, the title) is escaped. Pure Python.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

GENERATOR = "ptft explain"  # a page carrying this meta tag is one ptft may replace
METHOD_TITLES = {
    "integrated_gradients": "Integrated Gradients",
    "attention_rollout": "attention rollout",
}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin: 0.2em 0; }
section { border-top: 1px solid #ccc; padding: 0.8em 0; }
.method { margin: 0.4em 0; line-height: 2; }
.method b { display: inline-block; min-width: 11em; font-weight: 600; }
.tok { padding: 0.15em 0.25em; margin: 0 1px; border-radius: 3px; white-space: pre; }
.special { color: #888; border: 1px dashed #aaa; font-size: 0.85em; }
table.probs { border-collapse: collapse; margin: 0.3em 0; }
table.probs td { padding: 0 0.6em 0 0; }
.bar { display: inline-block; height: 0.8em; background: #4a78c2; }
.predicted { font-weight: 600; }
.note { color: #666; font-size: 0.9em; }
"""


def is_ours(path: Path) -> bool:
    """An earlier page of `ptft explain` (so writing over it loses nothing of the user's)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(2000)
    except (OSError, UnicodeDecodeError):
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head


def _shade(score: float, scale: float) -> str:
    """Red for evidence for the predicted class, blue against; opacity by size relative to `scale`."""
    alpha = min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    rgb = "220, 40, 40" if score >= 0 else "40, 90, 220"
    return f"background: rgba({rgb}, {alpha:.3f})"


def _tokens(tokens: list[str], special: list[bool], scores: list[float]) -> str:
    # Special tokens ([CLS], [SEP]) are shown but take no colour and do not set the scale: rollout
    # sends most of the flow to [CLS], which would wash out every word.
    words = [abs(s) for s, sp in zip(scores, special) if not sp]
    scale = max(words, default=0.0)
    spans = []
    for token, sp, score in zip(tokens, special, scores):
        title = html.escape(f"{token}: {score:+.4f}" + (" (special token)" if sp else ""), quote=True)
        if sp:
            spans.append(f'<span class="tok special" title="{title}">{html.escape(token)}</span>')
        else:
            spans.append(
                f'<span class="tok" style="{_shade(score, scale)}" title="{title}">{html.escape(token)}</span>'
            )
    return "".join(spans)


def _probabilities(probs: dict[str, float], predicted: str) -> str:
    rows = []
    for label, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        cls = ' class="predicted"' if label == predicted else ""
        rows.append(
            f"<tr{cls}><td>{html.escape(label)}</td><td>{p:.4f}</td>"
            f'<td><span class="bar" style="width: {p * 12:.2f}em"></span></td></tr>'
        )
    return '<table class="probs">' + "".join(rows) + "</table>"


def _section(n: int, row: dict[str, Any], methods: list[str]) -> str:
    text = html.escape(row["text"]) + (
        f" <span class='note'>‖</span> {html.escape(row['text_pair'])}" if "text_pair" in row else ""
    )
    parts = [
        f"<section><h2>{n}. {text}</h2>",
        f"<div>predicted <span class='predicted'>{html.escape(row['label'])}</span> "
        f"({row['score']:.4f})</div>",
        _probabilities(row["probabilities"], row["label"]),
    ]
    for method in methods:
        note = ""
        if method == "integrated_gradients":
            note = f" <span class='note'>convergence delta {row['ig_convergence_delta']:+.2e}</span>"
        parts.append(
            f'<div class="method"><b>{METHOD_TITLES[method]}</b>'
            f"{_tokens(row['tokens'], row['special'], row[method])}{note}</div>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def page(rows: list[dict[str, Any]], methods: list[str], title: str) -> str:
    """The whole page for the records `attribution.explain` returned."""
    legend = (
        "Each token is shaded by its attribution to the predicted class: red for, blue against (rollout "
        "is never negative); the strongest word of each line is fully coloured. Dashed tokens are special "
        "tokens. Hover a token for its score."
    )
    body = "\n".join(_section(i, row, methods) for i, row in enumerate(rows, start=1))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1><p class='note'>{legend}</p>\n{body}\n</body></html>\n"
    )
