"""`opt`: a config field with its help text and allowed values, helpers for path and table values, and the
"module:name" resolver. Task
config sections import only this, so they never import the loader that lists them."""

import importlib
from dataclasses import field


def load_target(target: str):
    """The object named by "module:name", imported only when asked for (TensorFlow is slow to import)."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def opt(default, help: str, choices: tuple = (), path: bool = False):
    """A config field with its help text (shown by `pipeline <stage> --help`) and optional allowed values.

    path=True: a file path (or, for a dict, a table of them). In a config file a relative path is relative to
    that file; on the command line, to the working directory; `{raw}` stands for paths.raw.
    """
    metadata = {"help": help, "choices": choices, "path": path}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


STEP_OPTS = {  # the shared loop's step schedule (core/trainer.Schedule), in each section it trains by steps
    "save_every": (
        1000,
        "training steps between checkpoints inside an epoch: a killed run resumes at the last one, on the same "
        "batches (0 = at evaluations only)",
    ),
    "eval_every": (0, "training steps between dev evaluations; patience then counts evaluations (0 = epoch ends)"),
    "max_steps": (0, "stop after this many training steps at the latest (0 = no limit; epochs still applies)"),
}


def step_opt(name: str):
    return opt(*STEP_OPTS[name])


def average_opt(default: float, measured: str = ""):
    """The `average_decay` field of a section whose trainer can keep its weights' moving average (core/averaging)."""
    return opt(
        default,
        "keep an exponential moving average of the weights (decay per step, at most (1 + t) / (10 + t) at step t) "
        f"and evaluate, keep and export it instead of the weights themselves{measured}; 0 = off",
    )


def each_value(fn, value, *args):
    """fn on a path value: a string, each string of a list, or each entry of a table of those."""
    if isinstance(value, dict):
        return {k: each_value(fn, v, *args) for k, v in value.items()}
    return [fn(v, *args) for v in value] if isinstance(value, list) else fn(value, *args)


def merge_table(old: dict, new: dict, defaults: dict) -> dict:
    """`new` over `old`. A language set anew (embed.vectors.en) also drops the default entries of single
    vocabularies in that language (ner_words.en) still at their default: a default for one vocabulary holds only
    while its language keeps its default, so naming your English vectors gives the tagger those too."""
    merged = {**old, **new}
    for lang in (k for k in new if "." not in k):
        for key in [k for k in defaults if k.endswith(f".{lang}") and k not in new and merged.get(k) == defaults[k]]:
            del merged[key]
    return merged
