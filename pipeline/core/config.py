"""Typed configuration: one frozen dataclass per stage, loaded from TOML plus `section.key=value` overrides.

Every value is set once, here or in a config file. Values that follow from data (vocabulary sizes, the
embedding width) are never configured: later stages read them from the artifacts that earlier stages write.
This module imports nothing heavy so that `make` can fingerprint configs without starting TensorFlow.
"""

import dataclasses
import hashlib
import importlib.util
import json
import os
import tomllib
import typing
from dataclasses import field
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.core.options import each_value, load_target, merge_table
from pipeline.core.sections import Embed, Export, Paths, Prepare, Report, Text, Vocab

# Each task's sections live in its own folder: [<task>.data] names its corpus, [<task>] its model. Registering a
# task here is one line (a third task: one more).
TASK_SECTIONS = {
    "ner": ("pipeline.ner.config:NerData", "pipeline.ner.config:Ner"),
    "translate": ("pipeline.translate.config:TranslateData", "pipeline.translate.config:Translate"),
    "lm": ("pipeline.lm.config:LmData", "pipeline.lm.config:Lm"),
}
TASKS = tuple(TASK_SECTIONS)


SECTIONS = {
    "paths": Paths,
    "prepare": Prepare,
    "text": Text,
    "vocab": Vocab,
    "embed": Embed,
    **{
        name: load_target(target)
        for task, (data, model) in TASK_SECTIONS.items()
        for name, target in ((f"{task}.data", data), (task, model))
    },
    "export": Export,
    "report": Report,
}
SPLITS = ("train", "valid", "test")
# Keys that existed once: a config that still sets one gets told why it is gone, not just "unknown key".
_PRESETS = "name the corpus files in [translate.data] (see configs/default.toml, configs/tatoeba-en-fr.toml)"
REMOVED = {
    "prepare.ner_context_tokens": "each CoNLL sentence is its own sequence; ner.doc_memory reads the document instead",
    "prepare.translation_corpus": _PRESETS,
    "prepare.source_lang": "it is translate.data.source_lang",
    "prepare.target_lang": "it is translate.data.target_lang",
    "prepare.tatoeba_seed": "it is prepare.split_seed",
    "prepare.tatoeba_valid": "it is prepare.valid_size",
    "prepare.tatoeba_test": "it is prepare.test_size",
    **{f"embed.{lang}": f"it is embed.vectors.{lang} (a [embed.vectors] table)" for lang in ("en", "fr", "de")},
}


def attr(section: str) -> str:
    """The Config attribute of a section: cfg.ner_data for [ner.data]."""
    return section.replace(".", "_")


def task_hooks(task: str):
    """pipeline/<task>/task.py, what a task gives the shared stages (its files, its part of prepare and vocab, its
    export), or None for a task whose parts the shared stages still spell out (ner, translate)."""
    name = f"pipeline.{task}.task"
    return importlib.import_module(name) if importlib.util.find_spec(name) else None


def hooked(cfg) -> dict:
    """{task: its hooks} for the defined tasks that have them."""
    return {t: h for t in tasks(cfg) if (h := task_hooks(t)) is not None}


def tasks(cfg) -> tuple[str, ...]:
    """The tasks this config defines: those whose [<task>.data] names a training corpus (text)."""
    return tuple(t for t in TASKS if getattr(cfg, attr(f"{t}.data")).train)


def languages(cfg) -> set[str]:
    """The languages of the defined tasks' text."""
    d, out = cfg.translate_data, set()
    if "ner" in tasks(cfg):
        out.add(cfg.ner_data.lang)
    if "translate" in tasks(cfg):
        out |= {d.source_lang, d.target_lang}
    for hooks in hooked(cfg).values():
        out |= hooks.languages(cfg)
    return out


def corpus_files(cfg) -> list[str]:
    """Every file the defined tasks' [<task>.data] names (both sides of an `x.{lang}` pair)."""
    d, files = cfg.translate_data, []
    if "ner" in tasks(cfg):
        files += [getattr(cfg.ner_data, s) for s in SPLITS]
    if "translate" in tasks(cfg):
        files += [getattr(d, s).replace("{lang}", lang) for s in SPLITS for lang in (d.source_lang, d.target_lang)]
    for hooks in hooked(cfg).values():
        files += hooks.corpus_files(cfg)
    return sorted({f for f in files if f})


class _ConfigMethods:
    def section_dict(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, attr(name)))

    def fingerprint(self, sections: tuple[str, ...]) -> str:
        """A stable digest of the given sections; a stage reruns when the digest of what it reads changes."""
        blob = json.dumps({s: self.section_dict(s) for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {name: self.section_dict(name) for name in SECTIONS}


# cfg.<section> for every section, each defaulting to its dataclass defaults.
Config = dataclasses.make_dataclass(
    "Config",
    [(attr(name), cls, field(default_factory=cls)) for name, cls in SECTIONS.items()],
    bases=(_ConfigMethods,),
    frozen=True,
)
Config.__module__ = __name__


def _coerce(where: str, value, ftype, choices):
    """Check one value against its declared type; ints are accepted where floats are expected."""
    if ftype is dict:  # a table of strings or lists of strings, e.g. [embed.vectors]
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        out, flat = {}, {}
        for k, v in value.items():  # `ner_words.en = ...` in a TOML file is a nested table: flatten it
            flat |= {f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v}
        for k, v in flat.items():
            one = f"{where}.{k}"
            out[k] = [_coerce(one, x, str, ()) for x in v] if isinstance(v, list) else _coerce(one, v, str, ())
        return out
    if ftype is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, ftype) and not (ftype is int and isinstance(value, bool))
    if not ok:
        one_of = f" (one of {', '.join(map(str, choices))})" if choices else ""
        raise InputError(f"{where}: expected {ftype.__name__}{one_of}, got {type(value).__name__} {value!r}")
    if choices and value not in choices:
        raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _split_key(dotted: str) -> tuple[str, str]:
    """'ner.data.train' -> ('ner.data', 'train'), 'embed.vectors.el' -> ('embed', 'vectors.el'): the longest
    section name that prefixes the key."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in SECTIONS:
            return ".".join(parts[:i]), ".".join(parts[i:])
    return parts[0], ".".join(parts[1:])


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise InputError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:  # a TOML literal (42, 0.5, true, "x"); anything else is a bare string
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _relative_to(value: str, base: Path | None) -> str:
    """A config file's relative path is relative to that file; `{raw}/...` and absolute paths stay."""
    value = os.path.expanduser(value) if value.startswith("~") else value
    if base is None or not value or value.startswith(("{raw}", "package:")) or Path(value).is_absolute():
        return value
    return os.path.normpath(base / value)


def _with_raw(value: str, raw: str) -> str:
    return raw + value[len("{raw}") :] if value.startswith("{raw}") else value


class _Values:
    """Config values as they are read, each checked when set so an error names where it came from."""

    def __init__(self):
        self.values: dict[str, dict] = {}

    def set(self, dotted: str, value, source: str, base: Path | None = None) -> None:
        section, key = _split_key(dotted)
        if section not in SECTIONS:
            raise InputError(f"{source}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if dotted in REMOVED:
            raise InputError(f"{source}: {dotted} was removed: {REMOVED[dotted]}")
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        name, _, sub = key.partition(".")
        f = fields.get(name)
        if f is None or (sub and f.type is not dict):
            raise InputError(f"{source}: unknown key {section}.{key} (known: {', '.join(fields)})")
        if sub:
            value = {sub: value}
        value = _coerce(f"{source}: {section}.{key}", value, f.type, f.metadata.get("choices"))
        if f.metadata.get("path"):
            value = each_value(_relative_to, value, base)
        entries = self.values.setdefault(section, {})
        if f.type is dict:  # tables merge: a config naming Greek vectors keeps the English and French defaults
            value = merge_table(entries.get(name, f.default_factory()), value, f.default_factory())
        entries[name] = value

    def read_file(self, path: Path, depth: int = 0) -> None:
        """A TOML file; its `base = "other.toml"` (relative to it) is read first and then overridden."""
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: invalid TOML: {e}") from None
        base = table.pop("base", None)
        if base is not None:
            if not isinstance(base, str) or depth > 8:
                raise InputError(f"{path}: base must name one config file (and bases may not loop)")
            self.read_file(path.parent / base, depth + 1)
        self.read_table(table, str(path), path.parent)

    def read_table(self, table: dict, source: str, base: Path | None = None) -> None:
        for sname, entries in table.items():
            if not isinstance(entries, dict):
                raise InputError(f"{source}: [{sname}] must be a table")
            for key, value in entries.items():
                dotted = f"{sname}.{key}"
                if dotted in SECTIONS and isinstance(value, dict):  # a nested table: [ner.data]
                    for k, v in value.items():
                        self.set(f"{dotted}.{k}", v, source, base)
                else:
                    self.set(dotted, value, source, base)

    def build(self) -> Config:
        sections = {attr(name): cls(**self.values.get(name, {})) for name, cls in SECTIONS.items()}
        raw = sections["paths"].raw
        for name, cls in SECTIONS.items():  # `{raw}` stands for paths.raw, wherever that was set
            section = sections[attr(name)]
            changes = {}
            for f in dataclasses.fields(cls):
                if f.metadata.get("path"):
                    value = getattr(section, f.name)
                    changes[f.name] = each_value(_with_raw, value, raw)
            sections[attr(name)] = dataclasses.replace(section, **changes)
        return Config(**sections)


def build(values: dict, source: str = "config") -> Config:
    """Validate a {section: {key: value}} mapping into a Config; unknown or mistyped keys are errors."""
    out = _Values()
    out.read_table(values, source)
    return out.build()


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a TOML config (or the defaults when path is None) and apply `section.key=value` overrides.

    Paths in a config file are relative to it; paths on the command line are relative to the working directory.
    """
    values = _Values()
    if path is not None:
        values.read_file(Path(path))
    for text in overrides:
        key, value = _parse_override(text)
        values.set(key, value, f"command line ({text})")
    return values.build()


def describe(sections: tuple[str, ...]) -> str:
    """Help text: every key of the given sections with its default, type and meaning."""
    lines = []
    for sname in sections:
        cls = SECTIONS[sname]
        lines.append(f"[{sname}]  {cls.__doc__.strip().splitlines()[0]}")
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            extra = f" (one of: {', '.join(map(str, choices))})" if choices else ""
            default = f.default_factory() if f.type is dict else f.default
            kind = "table" if f.type is dict else f.type.__name__
            lines.append(f"  {sname}.{f.name} = {default!r}  [{kind}] {f.metadata['help']}{extra}")
    return "\n".join(lines)
