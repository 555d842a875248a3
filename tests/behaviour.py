"""Record what the tiny config's pipeline does, through the CLI only, so the record survives any refactor.

    python tests/behaviour.py OUT_DIR > record.json

Runs data -> prepare -> vocab -> embed -> train-ner -> train-translate -> export on configs/tiny.toml with every
artifact under OUT_DIR (raw data from $DATA_MIRROR), under TF_DETERMINISTIC_OPS=1 and one thread, then prints:
each model's per-epoch training loss and dev score (history.json), and the outputs of every exported signature
on fixed sentences, read back in a fresh process that imports nothing of this project.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "prepare", "vocab", "embed", "train-ner", "train-translate", "export")
SENTENCES = [
    "EU rejects German call to boycott British lamb.",
    "Peter Blackburn visited Paris on Monday with John Smith.",
    "A man in a blue shirt is riding a bike down the street.",
    "Two dogs play in the snow.",
    "",
]
# Per-epoch values that are behaviour (not timings).
HISTORY_KEYS = {"ner": ("epoch", "loss", "dev_f1", "lr"), "translate": ("epoch", "loss", "dev_bleu", "dev_chrf", "lr")}

SERVE = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers nothing the default graphs need; harmless)
out = {}
for name, path, sentences in json.loads(sys.argv[1]):
    model = tf.saved_model.load(path)
    out[name] = {}
    for sig in sorted(model.signatures):
        fn = model.signatures[sig]
        if sig == "tag_tokens":
            width = max(len(s.split()) for s in sentences)
            arg = tf.constant([s.split() + [""] * (width - len(s.split())) for s in sentences], tf.string)
        else:
            arg = tf.constant(sentences)
        (key,) = fn.structured_input_signature[1]
        res = fn(**{key: arg})
        as_list = lambda v: [round(float(x), 4) for x in v.numpy().ravel()]  # noqa: E731
        out[name][sig] = {
            k: v.numpy().astype(str).tolist() if v.dtype == tf.string else as_list(v) for k, v in sorted(res.items())
        }
print(json.dumps(out, sort_keys=True))
"""


def env() -> dict:
    return os.environ | {
        "TF_DETERMINISTIC_OPS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def overrides(base: Path) -> list[str]:
    names = ("raw", "processed", "vocab", "embeddings", "reports", "models", "stamps")
    return [f'paths.{n}="{base / n}"' for n in names]


def record(base: Path) -> dict:
    if base.exists() and any(base.iterdir()):
        raise SystemExit(f"{base}: not empty (export would add a version beside the old one)")
    for stage in STAGES:
        cmd = [sys.executable, "-m", "pipeline", stage, "--config", str(ROOT / "configs/tiny.toml"), *overrides(base)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{stage} failed:\n{proc.stdout}\n{proc.stderr}")
    out = {"history": {}}
    for task, keys in HISTORY_KEYS.items():
        history = json.loads((base / "reports" / task / "history.json").read_text())
        out["history"][task] = [{k: h[k] for k in keys} for h in history]
    models = [(name, str(base / "models" / name / "1"), SENTENCES) for name in ("ner", "translate")]
    proc = subprocess.run(
        [sys.executable, "-c", SERVE, json.dumps(models)], cwd="/", env=env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"serving failed:\n{proc.stderr}")
    out["serving"] = json.loads(proc.stdout)
    return out


if __name__ == "__main__":
    print(json.dumps(record(Path(sys.argv[1]).resolve()), indent=1, sort_keys=True))
