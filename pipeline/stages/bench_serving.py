"""Stage `bench-serving`: CPU latency and throughput of the latest exported SavedModels, loaded as TF Serving would.

    <paths.reports>/bench_serving.json   per model: batch-1 latency p50 / p95 (ms) over REQUESTS single-sentence
                                         requests, and the throughput of BATCHES batches of BATCH sentences
                                         (NER tokens/s; translation sentences/s with the exported beam)

Requests are test sentences (CoNLL-2003 sentences re-joined into raw text; translation sources), or the warm-up
sentences when the processed corpora are absent. Times include the whole serving graph (tokenize, look up,
decode, detokenize) but not TF Serving's RPC and (de)serialisation, which add a little to every request.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.core import serving
from pipeline.core.config import Config, tasks
from pipeline.core.errors import InputError
from pipeline.core.files import write_json
from pipeline.ner import corpus as ner_corpus
from pipeline.translate import corpus as translate_corpus

REQUESTS, BATCH, BATCHES = 100, 64, 5  # the protocol; fixed so that reports stay comparable
UNITS = {"ner": "tokens", "translate": "sentences"}  # what the throughput counts


def latest(cfg: Config, name: str) -> Path:
    base = Path(cfg.paths.models) / name
    numbers = serving.versions(base)
    if not numbers:
        raise InputError(f"{base}: no exported version", hint="run `make export` first")
    return base / str(numbers[-1])


def sentences(cfg: Config, name: str) -> list[str]:
    """Non-empty test sentences of the model's corpus; the warm-up sentences when it was not prepared."""
    try:
        if name == "ner":
            found = [" ".join(words) for words, _ in ner_corpus.load_ner(cfg, "test")]
        else:
            found = [source for source, _ in translate_corpus.load_parallel(cfg, "test")]
    except (InputError, FileNotFoundError):
        found = []
    return [s for s in found if s.strip()] or [s for s in serving.WARMUP_TEXTS if s]


def bench_model(cfg: Config, name: str, requests: int, batch: int, batches: int) -> dict:
    path = latest(cfg, name)
    model = tf.saved_model.load(str(path))  # kept: a signature does not keep its model's tables alive
    serve = model.signatures["serving_default"]
    texts = sentences(cfg, name)
    serve(text=tf.constant(texts[:1]))  # the first call also optimises the graph: not a serving cost

    latencies = []
    for i in range(requests):
        start = time.perf_counter()
        serve(text=tf.constant(texts[i % len(texts) : i % len(texts) + 1]))
        latencies.append(1000 * (time.perf_counter() - start))

    rows = [[texts[(b * batch + j) % len(texts)] for j in range(batch)] for b in range(batches + 1)]
    serve(text=tf.constant(rows[0]))  # warm-up at the full batch size
    units, start = 0, time.perf_counter()
    for row in rows[1:]:
        out = serve(text=tf.constant(row))
        units += int(tf.reduce_sum(out["lengths"])) if name == "ner" else len(row)
    seconds = time.perf_counter() - start
    info = json.loads((path / "assets.extra/export.json").read_text(encoding="utf-8"))
    return {
        "version": int(path.name),
        "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))},
        "requests": len(latencies),
        "batch": batch,
        f"{UNITS[name]}_per_s": units / seconds,
        **({"beam_width": info["search"]["beam_width"]} if name == "translate" else {}),
    }


def run(cfg: Config) -> None:
    try:  # TF Serving's CPU image has no GPU; measure what it would see
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass
    report = {"cpu_count": os.cpu_count(), "tensorflow": tf.__version__}
    for name in tasks(cfg):
        report[name] = result = bench_model(cfg, name, REQUESTS, BATCH, BATCHES)
        unit, beam = UNITS[name], f" (beam {result['beam_width']})" if "beam_width" in result else ""
        print(
            f"  {name:9s} v{result['version']}  batch 1: p50 {result['latency_ms']['p50']:7.1f} ms  "
            f"p95 {result['latency_ms']['p95']:7.1f} ms   batch {result['batch']}: "
            f"{result[f'{unit}_per_s']:,.0f} {unit}/s{beam}"
        )
    write_json(Path(cfg.paths.reports) / "bench_serving.json", report)
