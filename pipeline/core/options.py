"""`opt`: a config field with its help text and allowed values. Task config sections import only this, so
they never import the loader that lists them."""

from dataclasses import field


def opt(default, help: str, choices: tuple = (), path: bool = False):
    """A config field with its help text (shown by `pipeline <stage> --help`) and optional allowed values.

    path=True: a file path (or, for a dict, a table of them). In a config file a relative path is relative to
    that file; on the command line, to the working directory; `{raw}` stands for paths.raw.
    """
    metadata = {"help": help, "choices": choices, "path": path}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)
