"""A torchrun entry point for tests: runs `ptft ARGS...` with `{rank}` in ARGS replaced by the
process's RANK, and records each process's exit code in `<PTFT_EXIT_DIR>/rank-N`.

It stands in for machines that see different files at the same path (node-local copies of the
data), so a test can give one rank a bad data row that the others do not see.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ptft_cli.cli import main

if __name__ == "__main__":
    rank = os.environ["RANK"]
    sys.argv = ["ptft", *(a.replace("{rank}", rank) for a in sys.argv[1:])]
    code: int | str | None = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    Path(os.environ["PTFT_EXIT_DIR"], f"rank-{rank}").write_text(str(code or 0))
    sys.exit(code)
