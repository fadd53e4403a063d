"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's kill).

The first signal only asks: the loop finishes its current optimizer step, saves a checkpoint and
returns, and the command exits 130 (SIGINT) or 143 (SIGTERM) with the exact command that resumes.
A second signal aborts at once (KeyboardInterrupt); the last complete checkpoint is still there.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from ptft_cli.distributed import launched

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
DUPLICATE_SECONDS = 2.0


class Interrupted(Exception):
    """The run stopped on a signal; the CLI prints `message` and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


class StopOnSignal:
    """Within `with`, SIGINT/SIGTERM set `requested` instead of killing the process; `note` tells
    the user what happens next. Outside the main thread (where handlers cannot be set) it does nothing."""

    def __init__(self, note: Callable[[str], None]):
        self.note = note
        self.requested: int | None = None
        self._first = 0.0
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.requested or signal.SIGINT, 130)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            # Under torchrun a Ctrl-C reaches each worker twice: from the terminal and forwarded by
            # the launcher. That is one request, not the second one that aborts.
            if launched() and time.monotonic() - self._first < DUPLICATE_SECONDS:
                return
            raise KeyboardInterrupt  # the second signal: stop now
        self.requested, self._first = signum, time.monotonic()
        name = signal.Signals(signum).name
        self.note(f"{name}: finishing this step and saving a checkpoint (send it again to stop at once)")

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
