"""The resume acceptance scripts run end to end with small settings and report success:
scripts/kill_during_save.py (SIGKILL during checkpoint writing, newest complete checkpoint loads and
resumes, final weights bit-identical) and scripts/bench_resume.py (time for a resumed run to start
training). Slow (a fresh interpreter per kill and per run): `pytest -m slow tests/test_resume_scripts.py`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args, "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
def test_kill_during_save_three_rounds(tmp_path: Path, streaming: bool) -> None:
    result = run_script(
        "kill_during_save.py", tmp_path, "--rounds", "3", *(["--streaming"] if streaming else [])
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    rounds = [line for line in result.stdout.splitlines() if line.startswith("round ")]
    assert len(rounds) == 3, output
    assert all(line.endswith(", loads") for line in rounds), output
    assert all("resumed from step" in line for line in rounds[1:]), output  # each round continues the last
    summary = result.stdout.splitlines()[-1]
    assert re.match(
        r"3/3 kills: newest complete checkpoint loaded and resumed; \d+ kills landed during a save", summary
    )
    assert "final weights bit-identical to the uninterrupted run: yes; metrics records equal: yes" in summary


@pytest.mark.slow
def test_bench_resume_small(tmp_path: Path) -> None:
    # a generous target: this checks the benchmark's mechanics, not this machine's speed (the
    # script's own verdict at its defaults is about the 5 s target)
    args = ["--steps", "300", "--resume-at", "270", "--repeats", "1", "--target-s", "60"]
    result = run_script("bench_resume.py", tmp_path, *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for mode in ("in-memory", "streaming"):
        assert f"| {mode} | fresh, step 0 |" in result.stdout, output
        assert f"| {mode} | resumed at 270 (#1) |" in result.stdout, output
    verdict = re.search(
        r"resuming a 300-step run at step 270 starts training in ([\d.]+) s in-memory, ([\d.]+) s streaming "
        r"\(worst of 1\); target 60 s: met; resumed runs bit-identical to the uninterrupted run: yes",
        result.stdout,
    )
    assert verdict, output
    assert all(0 < float(v) < 60 for v in verdict.groups())
