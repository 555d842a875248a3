"""`opt`: a config field with its help text and allowed values. Task config sections import only this, so
they never import the loader that lists them."""

from dataclasses import field


def opt(default, help: str, choices: tuple = ()):
    """A config field with its help text (shown by `pipeline <stage> --help`) and optional allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})
