"""`make bench`: training and decoding speed of both models at the configured sizes, on real batches.

    <paths.reports>/bench.json    {"machine": ..., "translate": {...}, "ner": {...}, "peak_rss_mb": ...}

Training speed runs the very train steps of `ner/train.py` and `translate/train.py` on bucketed batches of the real
training data (after warm-up steps that trace the step), counting real tokens only, never padding:
source + target tokens for the translator, words for the tagger. Decoding runs greedy and beam search
at batch 64 on the first valid sentences with the trained translator (an untrained one where there is none
yet: it emits longer output, so its numbers are pessimistic), and one beam-search step is timed part by part
(decoder cell, attention, output projection, log-softmax, top-k, beam reordering). Weights are not saved.
"""

import os
import platform
import resource
from pathlib import Path

from pipeline.core.config import Config, tasks
from pipeline.core.files import write_json
from pipeline.ner import bench as ner_bench
from pipeline.translate import bench as translate_bench


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
    }


def run(cfg: Config) -> None:
    defined = tasks(cfg)
    results = {"machine": machine()}
    if "translate" in defined:
        results["translate"] = translate_bench.bench_translate(cfg)
    if "ner" in defined:
        results["ner"] = ner_bench.bench_ner(cfg)
    if "translate" in defined:
        results["translate_profile"] = translate_bench.profile_translate(cfg)
        results["beam_step_profile"] = translate_bench.profile_beam_step(cfg)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    write_json(Path(cfg.paths.reports) / "bench.json", results)
    t, n, m = results.get("translate"), results.get("ner"), results["machine"]
    print(f"  machine: {m['cpu']}, {m['cores']} cores, GPUs {m['gpus'] or 'none'}")
    rows = []
    if t:
        rows.append(("translator training", f"{t['train_tokens_per_s']:,.0f} tokens/s (source + target)", "2,300"))
        files = f"{t['train_tokens_per_s_files']:,.0f} tokens/s ({t['files_over_memory']:.2f}x memory)"
        rows.append(("  from files (input=files)", files, ">= 0.95x"))
    if n:
        per = f" ({n['train_member_words_per_s']:,.0f} per tagger)" if cfg.ner.ensemble > 1 else ""
        rows.append(("NER training", f"{n['train_words_per_s']:,.0f} words/s" + per, "5,000 per tagger"))
    if t:
        rows += [
            ("greedy decoding, batch 64", f"{t['greedy_sentences_per_s']:,.1f} sentences/s", "-"),
            ("beam-5 decoding, batch 64", f"{t['beam5_sentences_per_s']:,.1f} sentences/s", "30"),
        ]
    rows.append(("peak memory", f"{results['peak_rss_mb']:,.0f} MB resident", "-"))
    print(f"  {'measure':<28}{'result':<40}target (2 CPU cores)")
    for name, value, target in rows:
        print(f"  {name:<28}{value:<40}{target}")
    if t:
        prof = results["translate_profile"]
        print(f"  translator train step, {prof['step_ms']:.0f} ms per batch of {cfg.translate.batch_size}:")
        for name, ms in prof["ms_per_batch"].items():
            print(f"    {name:<36}{ms:8.1f} ms  {100 * ms / prof['step_ms']:5.1f}%")
        beam = results["beam_step_profile"]
        model = "trained" if beam["trained"] else "untrained"
        print(f"  one beam step, {beam['rows']} rows (batch 64 x beam 5, {model} model): {beam['step_ms']:.1f} ms")
        for name, ms in beam["ms"].items():
            print(f"    {name:<36}{ms:8.2f} ms")
