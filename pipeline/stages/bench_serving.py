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
SWEEP = (4, 16)  # smaller batch sizes measured on the same sentences, for batching.config
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

    # The same sentences at smaller batch sizes too: how much a server gains by merging requests (batching.config).
    by_batch = {size: throughput(serve, name, texts, size, batch * batches) for size in SWEEP if size < batch}
    by_batch[batch] = throughput(serve, name, texts, batch, batch * batches)
    info = json.loads((path / "assets.extra/export.json").read_text(encoding="utf-8"))
    return {
        "version": int(path.name),
        "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))},
        "requests": len(latencies),
        "batch": batch,
        f"{UNITS[name]}_per_s": by_batch[batch],
        f"{UNITS[name]}_per_s_by_batch": by_batch,
        **({"beam_width": info["search"]["beam_width"]} if name == "translate" else {}),
    }


def throughput(serve, name: str, texts: list[str], batch: int, total: int) -> float:
    """Units per second over `total` sentences sent `batch` at a time (after one warm-up batch of that size)."""
    rows = [[texts[(b * batch + j) % len(texts)] for j in range(batch)] for b in range(-(-total // batch) + 1)]
    serve(text=tf.constant(rows[0]))
    units, start = 0, time.perf_counter()
    for row in rows[1:]:
        out = serve(text=tf.constant(row))
        units += int(tf.reduce_sum(out["lengths"])) if name == "ner" else len(row)
    return units / (time.perf_counter() - start)


def batching_choice(report: dict, models: list[str]) -> dict:
    """The batching.config the figures support (the rule README's Export and serving states): max_batch_size is
    the measured batch size whose worst model comes closest to its own best throughput (the smaller on a tie), and
    a lone request waits at most half the batch-1 p50 of the fastest model, so light load costs it at most 1.5x."""
    curves = [report[m][f"{UNITS[m]}_per_s_by_batch"] for m in models]
    sizes = sorted({size for curve in curves for size in curve})
    share = {s: min(c.get(s, 0) / max(c.values()) for c in curves) for s in sizes}
    fastest = min(report[m]["latency_ms"]["p50"] for m in models)
    return {"max_batch_size": max(sizes, key=lambda s: (share[s], -s)), "batch_timeout_micros": int(500 * fastest)}


def run(cfg: Config) -> None:
    try:  # TF Serving's CPU image has no GPU; measure what it would see
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass
    report = {"cpu_count": os.cpu_count(), "tensorflow": tf.__version__}
    models = [name for name in tasks(cfg) if name in UNITS]  # the LM generates text: no request/batch protocol
    for name in models:
        report[name] = result = bench_model(cfg, name, REQUESTS, BATCH, BATCHES)
        unit, beam = UNITS[name], f" (beam {result['beam_width']})" if "beam_width" in result else ""
        print(
            f"  {name:9s} v{result['version']}  batch 1: p50 {result['latency_ms']['p50']:7.1f} ms  "
            f"p95 {result['latency_ms']['p95']:7.1f} ms   batch {result['batch']}: "
            f"{result[f'{unit}_per_s']:,.0f} {unit}/s{beam}"
        )
        sweep = ", ".join(f"{b}: {v:,.0f}" for b, v in result[f"{unit}_per_s_by_batch"].items())
        print(f"  {'':9s} {unit}/s by batch size: {sweep}")
    if models:
        report["batching_choice"] = choice = batching_choice(report, models)
        print(
            f"  batching.config these figures support: max_batch_size {choice['max_batch_size']}, "
            f"batch_timeout_micros {choice['batch_timeout_micros']} (export.batch_max_size / batch_timeout_micros)"
        )
    write_json(Path(cfg.paths.reports) / "bench_serving.json", report)
