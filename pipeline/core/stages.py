"""The stage table: what each stage runs and which config sections it reads.

`make` reruns a stage when the fingerprint of those sections changes (data/stamps/<stage>.cfg, rewritten
only when its content changes) or when an upstream stage's completion stamp (<stage>.done) is newer.
"""

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import lock
from pipeline.core.config import TASKS, Config, tasks
from pipeline.core.errors import InputError
from pipeline.core.files import write_json, write_text
from pipeline.core.options import load_target


@dataclass(frozen=True)
class Stage:
    name: str
    target: str  # "module:function", imported only when the stage runs (TensorFlow is slow to import)
    sections: tuple[str, ...]
    help: str
    # Raised when what the stage writes changes form, so `make` reruns it, and what follows, over old outputs.
    output_version: int = 1
    # "module:function" of (cfg, stage name) giving what the config stamp covers instead of whole sections (the
    # data stage reads one key of [embed], whose other keys must not make it rerun).
    inputs: str = ""

    @property
    def task(self) -> str:
        """The task a stage belongs to (train-ner: ner), or "" for a shared stage."""
        return next((t for t in TASKS if self.name.endswith(f"-{t}")), "")


DATA = ("ner.data", "translate.data", "lm.data")
NER = ("paths", "prepare", "text", "vocab", "embed", "ner.data", "ner")
TRANSLATE = ("paths", "prepare", "text", "vocab", "embed", "translate.data", "translate")
LM = ("paths", "prepare", "lm.data", "lm")
EVERYTHING = ("paths", "prepare", "text", "vocab", "embed", *DATA, "ner", "translate", "lm")

STAGES = {
    s.name: s
    for s in (
        Stage(
            "data",
            "pipeline.stages.fetch:run",
            ("paths", *DATA, "embed"),
            "fetch and sha256-verify the shipped corpora and vectors the config names",
            inputs="pipeline.stages.fetch:stamp_inputs",
        ),
        Stage(
            "check-data",
            "pipeline.stages.prepare:check_data",
            ("paths", "prepare", "text", *DATA),
            "read and check the corpora (counts, lengths, overlaps, tags): data/reports/data.json, nothing else",
        ),
        # Version 2: data/processed/ner/*.conll keep the -DOCSTART- lines (the tagger's document memory).
        # Version 3: data/processed/translate/ holds shards and their manifest.json.
        Stage(
            "prepare",
            "pipeline.stages.prepare:run",
            ("paths", "prepare", "text", *DATA),
            "check the corpora, split off missing valid/test, write the processed splits",
            3,
            inputs="pipeline.stages.prepare:stamp_inputs",
        ),
        Stage(
            "vocab",
            "pipeline.stages.vocab:run",
            ("paths", "prepare", "text", "vocab", "embed", *DATA),
            "vocabularies + OOV report",
            inputs="pipeline.translate.config:stage_inputs",
        ),
        # Version 2: also data/embeddings/ner_lexicon.npz (the tagger's English word statistics).
        # Version 3: ner_lexicon.npz also holds the name lists (pipeline/ner/gazetteer.py).
        Stage(
            "embed",
            "pipeline.stages.embed:run",
            ("paths", "prepare", "text", "vocab", "embed", *DATA),
            "embedding matrices from pretrained or gensim-trained vectors, word statistics + coverage report",
            3,
            inputs="pipeline.translate.config:stage_inputs",
        ),
        Stage("train-ner", "pipeline.ner.train:run", NER, "train the BiLSTM-CNN-CRF tagger"),
        Stage("evaluate-ner", "pipeline.ner.evaluate:run", NER, "entity-level P/R/F1 (seqeval) on valid and test"),
        Stage(
            "train-translate",
            "pipeline.translate.train:run",
            TRANSLATE,
            "train the attentional LSTM encoder-decoder",
            inputs="pipeline.translate.config:stage_inputs",
        ),
        Stage(
            "evaluate-translate",
            "pipeline.translate.evaluate:run",
            TRANSLATE,
            "sacreBLEU BLEU and chrF (beam search) on valid and test",
            inputs="pipeline.translate.config:stage_inputs",
        ),
        Stage("train-lm", "pipeline.lm.train:run", LM, "train the character-level LSTM language model (TBPTT)"),
        Stage(
            "evaluate-lm",
            "pipeline.lm.evaluate:run",
            LM,
            "valid (and test) loss in nats and bits per character, samples at three temperatures",
        ),
        # ---- export for TF Serving (pipeline/stages/export.py, pipeline/stages/bench_serving.py) ----
        Stage(
            "export",
            "pipeline.stages.export:run",
            (*EVERYTHING, "export"),
            "string-in/string-out SavedModels of every defined task, as the next TF Serving version, + models.config",
        ),
        Stage("export-ner", "pipeline.stages.export:run_ner", (*NER, "export"), "the tagger's SavedModel (as export)"),
        Stage(
            "export-translate",
            "pipeline.stages.export:run_translate",
            (*TRANSLATE, "export"),
            "the translator's SavedModel (as export)",
            inputs="pipeline.translate.config:stage_inputs",
        ),
        Stage(
            "export-lm", "pipeline.stages.export:run_lm", (*LM, "export"), "the language model's SavedModel (as export)"
        ),
        Stage(
            "bench-serving",
            "pipeline.stages.bench_serving:run",
            ("paths", *DATA),
            "CPU batch-1 latency and batch throughput of the latest exported SavedModels",
        ),
        Stage(
            "report",
            "pipeline.report:run",
            (*EVERYTHING, "report"),
            "one self-contained HTML page (+ Markdown) with tables and plots of every stage's results",
        ),
        Stage(
            "bench",
            "pipeline.stages.bench:run",
            EVERYTHING,
            "training tokens/s, decoding sentences/s and peak memory of the defined tasks' models on real batches",
        ),
        Stage(
            "bench-peer",
            "pipeline.stages.bench_peer:run",
            ("paths", "prepare", "text", "vocab", "translate.data", "translate"),
            "translator training tokens/s beside OpenNMT-tf 2.32's at the same size (.venv-peer), and the ratio; "
            "env BENCH_PEER_STEPS (default 300) timed steps a side after BENCH_PEER_WARMUP (default 10)",
        ),
        Stage(
            "bench-scale",
            "pipeline.stages.bench_scale:run",
            ("paths", "translate.data"),
            "prepare, vocab, embed and train-translate, each a process, on parallel corpora generated from the "
            "[translate.data] corpus at several sizes: wall time, pairs/s, peak RSS, training tokens/s "
            "(data/reports/bench_scale.json); env BENCH_SCALE_SIZES (default 100000,1000000,4000000 pairs), "
            "BENCH_SCALE_STEPS (default 200), BENCH_SCALE=tiny (1000,3000 pairs, 5 steps, configs/tiny.toml's "
            "model), BENCH_SCALE_KEEP=1 keeps the generated files",
        ),
    )
}


def reads(cfg: Config, name: str) -> dict:
    """{section: {key: value}} of what a stage reads: its config stamp, and a training run's checkpoint settings."""
    stage = STAGES[name]
    return load_target(stage.inputs)(cfg, name) if stage.inputs else {s: cfg.section_dict(s) for s in stage.sections}


def cfg_stamp(cfg: Config, name: str) -> Path:
    return Path(cfg.paths.stamps) / f"{name}.cfg"


def done_stamp(cfg: Config, name: str) -> Path:
    return Path(cfg.paths.stamps) / f"{name}.done"


def write_cfg_stamp(cfg: Config, name: str) -> bool:
    """Write the stage's config fingerprint only if it changed, so its mtime tells make what changed."""
    stage = STAGES[name]
    payload = reads(cfg, name)
    if stage.output_version > 1:
        payload["output_version"] = stage.output_version
    content = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    path = cfg_stamp(cfg, name)
    if path.is_file() and path.read_text(encoding="utf-8") == content:
        return False
    write_text(path, content)
    return True


def recipe(cfg: Config, name: str) -> dict:
    """{"section.key": value} of what a stage reads, without [paths]: where files live is not how they were made.
    JSON's types (lists, not tuples), so that it compares equal to the copy in a done stamp."""
    flat = {}
    for key, value in reads(cfg, name).items():
        if key != "paths":
            flat |= {f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value}
    return json.loads(json.dumps(flat))


def upstream(name: str) -> list[str]:
    """The stages whose outputs this one reads, nearest first, as the Makefile chains them."""
    task = STAGES[name].task
    parent = {"prepare": "data", "vocab": "prepare", "embed": "vocab", f"train-{task}": "embed"}.get(name)
    parent = parent or (f"train-{task}" if name in (f"evaluate-{task}", f"export-{task}") else None)
    return [parent, *upstream(parent)] if parent else []


def stale_upstream(cfg: Config, name: str) -> list[str]:
    """Why this stage's inputs may not match the config, as `make` would judge: an upstream stage ran with other
    settings, or ran again after a stage built on it. A direct `python -m pipeline <stage>` skips make's check."""
    notes, later = [], None  # the nearest upstream stamp seen so far
    for up in upstream(name):
        path = done_stamp(cfg, up)
        if not path.is_file():
            continue
        ran = json.loads(path.read_text(encoding="utf-8")).get("recipe")
        if ran is not None:  # stamps before session 27 carry no recipe
            now = recipe(cfg, up)
            changed = sorted(k for k in ran.keys() | now.keys() if ran.get(k, "?") != now.get(k, "?"))
            shown = ", ".join(f"{k} {ran.get(k, '-')!r} -> {now.get(k, '-')!r}" for k in changed[:4])
            if changed:
                notes.append(f"{up} ran with other settings ({shown}{', ...' if len(changed) > 4 else ''})")
        if later and path.stat().st_mtime > later.stat().st_mtime:
            notes.append(f"{up} ran again after {later.stem}, which was built on its earlier outputs")
        later = path
    return notes


def run(cfg: Config, name: str) -> float:
    """Run one stage, then record its completion stamp (its fingerprint and wall time). Returns seconds."""
    stage = STAGES[name]
    if stage.task and stage.task not in tasks(cfg):
        raise InputError(
            f"{name}: the config defines no {stage.task} task ([{stage.task}.data] train is empty)",
            hint=f"name a training corpus in [{stage.task}.data] (README: Train on your own data)",
        )
    for note in stale_upstream(cfg, name):
        print(f"warning: {name}: {note}; `make {name}` rebuilds what is out of date first", file=sys.stderr)
    with lock.hold(cfg, name):  # a second run of this stage on the same paths stops here, naming the first
        fn = load_target(stage.target)
        start = time.perf_counter()
        fn(cfg)
        seconds = time.perf_counter() - start
        write_json(
            done_stamp(cfg, name),
            {
                "stage": name,
                "fingerprint": cfg.fingerprint(stage.sections),
                "recipe": recipe(cfg, name),
                "seconds": seconds,
            },
        )
    return seconds
