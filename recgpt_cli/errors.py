"""Errors meant for people: one line, `file:line: what is wrong`, and an exit code."""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # the stage finished, but some records failed and were written with their `error`


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



class PartialFailure(RecgptError):
    """The stage wrote every record, but `failed` of them carry an `error` (an LLM call that kept failing).
    Exit code 3; failures are never cached, so rerunning the same command retries just those."""

    exit_code = EXIT_PARTIAL

    def __init__(self, stage: str, failed: int, total: int, what: str = "records",
                 marked: str = "written with `error`") -> None:
        super().__init__(f"{stage}: {failed} of {total} {what} failed ({marked})",
                         "failures are not cached: rerun the same command to retry them")
        self.failed = failed
        self.total = total
