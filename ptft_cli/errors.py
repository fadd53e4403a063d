"""User errors: typed, carrying where the problem is and a hint. The CLI turns them into exit code 2."""

from __future__ import annotations

MAX_MESSAGE = 400  # a message quotes values; a huge value must not become a huge line


class PtftError(Exception):
    """A problem with the user's input (config, data, paths), never a bug.

    `where` names the place (``file:line``, ``file row 12``, ``--set``), `key` the config key or
    column, and `hint` what would fix it. Several problems can be carried at once (`problems`)
    so a config with three typos is reported in one go.
    """

    def __init__(
        self, message: str, *, where: str | None = None, key: str | None = None, hint: str | None = None
    ):
        self.message = message
        self.where = where
        self.key = key
        self.hint = hint
        self.problems: list[PtftError] = [self]
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.where, self.key) if p]
        prefix = ": ".join(parts)
        message = (
            self.message if len(self.message) <= MAX_MESSAGE else self.message[: MAX_MESSAGE - 3] + "..."
        )
        return f"{prefix}: {message}" if prefix else message

    def __str__(self) -> str:
        """Every problem on its own line (the API raises this; the CLI prints `problems` itself)."""
        return "\n".join(p.line() for p in self.problems)

    @property
    def __notes__(self) -> list[str]:
        """The hints, shown under the message in a traceback (a notebook cell that calls the API)."""
        if len(self.problems) == 1:
            return [f"hint: {self.hint}"] if self.hint else []
        return [f"hint ({p.key or p.where}): {p.hint}" for p in self.problems if p.hint]

    @classmethod
    def many(cls, problems: list[PtftError]) -> PtftError:
        """One error that reports every problem (the first one's text is the headline)."""
        first = problems[0]
        err = cls(first.message, where=first.where, key=first.key, hint=first.hint)
        err.problems = list(problems)
        return err


class ConfigError(PtftError):
    """The YAML config or a --set override is wrong."""


class DataError(PtftError):
    """A data file is missing, empty, malformed, or disagrees with the config."""


class RunDirError(PtftError):
    """The output directory would clobber another run, or a trained run is missing."""
