"""Errors the user can fix. The CLI turns them into one clear line and a documented exit code."""


class InputError(Exception):
    """Bad input or config: the message names the file (and line) and says what is wrong. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def at(path, line: int | None, problem: str) -> InputError:
    """An InputError whose message starts `file:line:` so editors and humans can jump to it."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return InputError(f"{where}: {problem}")
