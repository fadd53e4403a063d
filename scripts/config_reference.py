"""Print the README's config reference from the schema (ptft_cli/config/schema.py), or rewrite it in place.

    python scripts/config_reference.py           # print the markdown
    python scripts/config_reference.py --write   # replace the block between the markers in README.md

tests/test_config.py fails when README.md and the schema disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ptft_cli import config  # noqa: E402

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def markdown() -> str:
    out, section = (
        ["↻: may change when a run resumes (`--resume`); every other key must match the checkpoint's."],
        None,
    )
    safe = set(config.resume_safe_keys())
    for key, kind, default, doc in config.reference():
        current = key.split(".")[0] if "." in key else ""
        if current != section:
            section = current
            out.append(f"\n**{section or 'top level'}**\n")
            out.append("| key | type | default | meaning |")
            out.append("|---|---|---|---|")
        mark = " ↻" if key in safe else ""
        out.append(f"| `{key}`{mark} | {_cell(kind)} | `{_cell(_default(default))}` | {_cell(doc)} |")
    return "\n".join(out).strip() + "\n"


def main() -> None:
    text = markdown()
    if "--write" not in sys.argv:
        print(text)
        return
    readme = ROOT / "README.md"
    body = readme.read_text(encoding="utf-8")
    head, _, rest = body.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
