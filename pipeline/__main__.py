"""`pipeline <stage> [--config FILE] [section.key=value ...]`: parse, dispatch, and map errors to exit codes.

Exit codes: 0 ok, 2 bad input or config (one line naming the file and line, plus a hint), 1 internal error.
"""

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import os
import re
import sys
import tempfile

from pipeline.core import config, stages
from pipeline.core.errors import InputError
from pipeline.core.options import load_target

# TensorFlow's native start-up lines (absl's notice, CUDA probing on a machine without a GPU, CPU feature notes)
# are written to file descriptor 2 before TF_CPP_MIN_LOG_LEVEL applies: they are caught while TensorFlow starts.
# After that, TF_CPP_MIN_LOG_LEVEL=3 keeps its routine ERROR-level notes (oneDNN's "DT_BOOL ...") out; fatal
# messages, Python's warnings and tracebacks still show. Commands that never import TensorFlow skip all this;
# --verbose shows everything.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl|To enable the following|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] )"
)
WITHOUT_TENSORFLOW = {"stamp", "path", "tasks", "data", "check-data", "prepare"}


@contextlib.contextmanager
def _native_stderr_filtered():
    """File descriptor 2 into a temp file while TensorFlow starts, then every line that is not start-up noise on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if not NOISE.match(line):
                    print(line, file=sys.stderr)


def hand_large_blocks_back() -> None:
    """glibc malloc: blocks of 1 MiB or more are mapped from the OS and unmapped when freed, not kept in its heaps.
    With its default, TensorFlow's tensors of each new batch shape left the heaps fragmented, and a translator's
    resident memory grew about 12 MB a training step for as long as was measured (200 steps); with this it levels
    off, at the same speed (bench-scale, issue #26). MALLOC_MMAP_THRESHOLD_ set by the user wins."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, 1 << 20)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its allocator is another's
        pass


def start_tensorflow_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a value the user set wins
    with _native_stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe, which logs its failure on a CPU-only machine


DEFAULT_CONFIG = "configs/default.toml"
# Commands that run a trained model on raw sentences: (help, description, "module:function").
PREDICTORS = {
    "tag": (
        "tag named entities in sentences",
        "Print the entities that the trained tagger finds, with their types.",
        "pipeline.ner.predict:tag_main",
    ),
    "translate": (
        "translate sentences with the trained translator",
        "Print one translation a line (beam search as configured in [translate]).",
        "pipeline.translate.predict:translate_main",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Staged NLP pipeline: data -> prepare -> vocab -> ... Each stage reads and writes files "
        "under the paths in the config.",
        epilog="Exit codes: 0 ok, 2 bad input or config, 1 internal error. `pipeline STAGE --help` lists the "
        "config keys a stage reads.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    for stage in stages.STAGES.values():
        p = sub.add_parser(
            stage.name,
            help=stage.help,
            description=f"{stage.help}\n\nconfig keys (override as section.key=value):\n"
            + config.describe(stage.sections),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p)
    for name, (help_text, description, _) in PREDICTORS.items():
        p = sub.add_parser(
            name, help=f"{help_text} (arguments, or one sentence a line on stdin)", description=description
        )
        p.add_argument("sentences", nargs="*", help="raw sentences; without any, read stdin line by line")
        if name == "tag":
            p.add_argument(
                "--document",
                action="store_true",
                help="the sentences are one document: with ner.doc_memory, names read their other mentions",
            )
        _common(p, overrides_flag=True)
    p = sub.add_parser(
        "generate",
        help="sample text from the trained character language model",
        description="Print a continuation of PROMPT sampled from the language model (the exported `generate` "
        "signature's graph: the same seed gives the same text there).",
    )
    p.add_argument("prompt", nargs="?", default="", help="text to continue (default: none, a new line)")
    p.add_argument("--temperature", type=float, help="0 = greedy; higher = more varied (default: lm.temperature)")
    p.add_argument("--length", type=int, default=500, help="characters to generate (default: 500)")
    p.add_argument("--seed", type=int, default=1, help="the same seed gives the same text (default: 1)")
    p.add_argument("--top-k", type=int, help="sample among the k likeliest characters (default: lm.top_k; 0 = all)")
    _common(p, overrides_flag=True)
    p = sub.add_parser("stamp", help="(for make) write the config fingerprints of stages whose config changed")
    p.add_argument("stage_names", nargs="+", metavar="STAGE", choices=list(stages.STAGES))
    _common(p, overrides_flag=True)
    p = sub.add_parser("tasks", help="(for make) print the tasks the config defines: ner, translate, lm")
    _common(p, overrides_flag=True)
    p = sub.add_parser("path", help="(for make) print one paths.* value of the config")
    p.add_argument("key", choices=[f.name for f in dataclasses.fields(config.Paths)])
    _common(p, overrides_flag=True)
    return parser


PREDICTOR_TASKS = {"tag": "ner", "translate": "translate"}
OVERRIDE = re.compile(r"^([a-z_]+)\.[a-z_.]+=")


def check_predictor_args(cfg, command: str, sentences: list[str]) -> None:
    """A predictor takes sentences: a `section.key=value` among them is a config override given the stage way."""
    task = PREDICTOR_TASKS[command]
    if task not in config.tasks(cfg):
        raise InputError(f"{command}: the config defines no {task} task ([{task}.data] train is empty)")
    for sentence in sentences:
        match = OVERRIDE.match(sentence)
        if match and match.group(1) in config.SECTIONS:
            raise InputError(
                f"{command}: {sentence!r} looks like a config override, not a sentence",
                hint=f"pass overrides to `pipeline {command}` as --set {sentence}",
            )


def _common(p: argparse.ArgumentParser, overrides_flag: bool = False) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML config file (default: {DEFAULT_CONFIG})")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's native start-up log lines")
    if overrides_flag:
        p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    else:
        p.add_argument("overrides", nargs="*", metavar="section.key=value", help="override one config value")


def run(cfg, args) -> int:
    """One command on a loaded config."""
    if args.command == "stamp":
        for name in args.stage_names:
            stages.write_cfg_stamp(cfg, name)
        return 0
    if args.command in PREDICTORS:
        check_predictor_args(cfg, args.command, args.sentences)
        run_predictor = load_target(PREDICTORS[args.command][2])
        options = {"document": args.document} if args.command == "tag" else {}
        run_predictor(cfg, args.sentences or [line.rstrip("\n") for line in sys.stdin], **options)
        return 0
    if args.command == "generate":
        if "lm" not in config.tasks(cfg):
            raise InputError("generate: the config defines no lm task ([lm.data] train is empty)")
        from pipeline.lm.generate import generate_main

        generate_main(cfg, args.prompt, args.temperature, args.length, args.seed, args.top_k)
        return 0
    if args.command == "path":
        print(getattr(cfg.paths, args.key))
        return 0
    if args.command == "tasks":
        print(" ".join(config.tasks(cfg)))
        return 0
    seconds = stages.run(cfg, args.command)
    print(f"[{args.command}] done in {seconds:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config.load(args.config, args.overrides)
        if args.command not in WITHOUT_TENSORFLOW:
            hand_large_blocks_back()
        if args.verbose:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        elif args.command not in WITHOUT_TENSORFLOW:
            start_tensorflow_quietly()
        return run(cfg, args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every artifact is written to a temp file and renamed, so what was there before is still intact.
        print(f"error: no space left on the device while writing {e.filename or 'an artifact'}", file=sys.stderr)
        print("hint: free some disk space and rerun; earlier artifacts are intact", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial artifact was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
