"""Errors meant for people: one line, `file:line: what is wrong`, and an exit code."""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class RecgptError(Exception):
    """A failure we can explain in one line. Exit code 1 unless the input is at fault."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(RecgptError):
    """The user's input is wrong (malformed file, unknown id, bad option). Exit code 2."""

    exit_code = EXIT_BAD_INPUT

    @classmethod
    def at(cls, source: str, line: int | None, message: str, hint: str | None = None) -> BadInput:
        where = f"{source}:{line}" if line is not None else source
        return cls(f"{where}: {message}", hint)

