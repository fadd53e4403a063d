"""The shape of the house (STYLE.md), checked so it does not erode: small signatures, models built
in one place, task identity in the registry, no torch behind `ptft --help`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ptft_cli"


def functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((str(path.relative_to(PACKAGE)), node))
    return out


def test_there_is_code_to_check() -> None:
    assert len(functions()) > 150


def test_no_function_takes_more_than_six_parameters() -> None:
    """Typer's command functions are the exception: each option is a parameter."""
    too_many = []
    for where, fn in functions():
        a = fn.args
        names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
        names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
        is_command = where == "cli.py" and any(
            isinstance(d, ast.Call) and getattr(d.func, "attr", "") in ("command", "callback")
            for d in fn.decorator_list
        )
        if len(names) > 6 and not is_command:
            too_many.append(f"{where}:{fn.lineno} {fn.name}({', '.join(names)})")
    assert too_many == []


def test_models_are_built_and_loaded_only_in_models_py() -> None:
    builders = ("from_pretrained(", "from_config(", ".for_model(")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "models.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if any(b in line for b in builders) and "Tokenizer" not in line:
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert offenders == []


def test_task_identity_lives_in_the_registry() -> None:
    """No `cfg.task == ...` branches: a new task is a module and a registry line."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if "task ==" in line or "task in (" in line or "task !=" in line:
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert offenders == []


def test_help_and_validate_do_not_import_torch() -> None:
    code = (
        "import sys\nfrom ptft_cli.cli import app\n"
        "from ptft_cli import runner, tasks, models, checkpoint, config\n"
        "from ptft_cli.tasks import classification, mlm, nsp, clm\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('torch', 'transformers'))][:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
