"""`make bench-scale`: the corpus generator (deterministic, streaming, aligned, a growing vocabulary), the settings, the
generated config, the per-process measurement, and the tiny mode end to end on the real corpora."""

import json
import sys
import tracemalloc
from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.core.errors import InputError
from pipeline.stages import bench_scale, scale_corpus
from pipeline.translate import corpus
from tests.conftest import needs_data, synthetic_pairs, tiny_config

SOURCE = synthetic_pairs(200, seed=0)


def test_the_generator_is_deterministic_and_a_larger_corpus_starts_with_a_smaller_one():
    first = list(scale_corpus.generate(SOURCE, 300, seed=1))
    assert first == list(scale_corpus.generate(SOURCE, 300, seed=1))
    assert first != list(scale_corpus.generate(SOURCE, 300, seed=2))
    assert list(scale_corpus.generate(SOURCE, 100, seed=1)) == first[:100]


def _peak_bytes(n: int) -> int:
    tracemalloc.start()
    for _ in scale_corpus.generate(SOURCE, n, seed=1):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_the_generator_streams():
    # A list of 40,000 pairs would take ~8 MB more than one of 2,000; a stream's peak stays within noise (<1 MB).
    small, large = _peak_bytes(2000), _peak_bytes(40_000)
    assert large < small + 1_000_000, (small, large)


def test_written_files_are_aligned_non_empty_pairs_with_their_counts(tmp_path):
    stats = scale_corpus.write(scale_corpus.generate(SOURCE, 500, seed=1), tmp_path / "train", ("en", "de"))
    read = corpus.read_parallel(tmp_path / "train.en.gz", tmp_path / "train.de.gz")
    assert len(read.pairs) == stats["pairs"] == 500 and not read.skipped
    assert read.pairs == [(s.strip(), t.strip()) for s, t in scale_corpus.generate(SOURCE, 500, seed=1)]
    assert stats["source"]["tokens"] == sum(len(s.split()) for s, _ in read.pairs)
    assert stats["target"]["types"] == len({w for _, t in read.pairs for w in t.split()})
    assert not list(tmp_path.glob(".*.tmp"))  # written, then renamed


def test_the_vocabulary_keeps_growing_with_the_corpus():
    def types(n):
        return len({w for s, _ in scale_corpus.generate(SOURCE, n, seed=1) for w in s.split()})

    # The source has 19 words: every further type is a pseudo-word of the Zipf tail, and there are always more.
    small, medium, large = types(1000), types(4000), types(16_000)
    assert 19 < small < medium < large
    assert large / medium > 1.5  # Heaps' law with beta ~0.6: 4x the tokens, ~2.3x the new types


def test_replaced_words_are_the_same_pseudo_word_on_both_sides():
    known = {w.lower() for s, t in SOURCE for w in (*s.split(), *t.split())}
    made_up = found = 0
    for s, t in scale_corpus.generate(SOURCE, 2000, seed=1):
        new_src = {w.lower() for w in s.split()} - known
        made_up += len(new_src)
        found += len(new_src & {w.lower() for w in t.split()})
    # Two source words may land on one target word (the alignment is by relative position): nearly all, not all.
    assert made_up > 500 and found > 0.9 * made_up


def test_pseudo_words_are_distinct():
    words = [scale_corpus.pseudo_word(i) for i in range(1, 20_000)]
    assert len(set(words)) == len(words) and all(w.isalpha() and len(w) >= 4 for w in words)


def test_settings_come_from_the_environment():
    full = bench_scale.settings_from_env({})
    assert (full.sizes, full.steps, full.keep) == ((100_000, 1_000_000, 4_000_000), 200, False)
    tiny = bench_scale.settings_from_env({"BENCH_SCALE": "tiny", "BENCH_SCALE_KEEP": "1"})
    assert (tiny.sizes, tiny.steps, tiny.keep, tiny.base.name) == ((1000, 3000), 5, True, "tiny.toml")
    env = {"BENCH_SCALE_SIZES": "3000,1_000", "BENCH_SCALE_STEPS": "7", "BENCH_SCALE_KEEP": ""}
    assert bench_scale.settings_from_env(env).sizes == (1000, 3000)
    for bad in ({"BENCH_SCALE": "huge"}, {"BENCH_SCALE_SIZES": "1e5"}, {"BENCH_SCALE_STEPS": "0"}):
        with pytest.raises(InputError):
            bench_scale.settings_from_env(bad)


def test_the_generated_config_is_an_own_data_translation_config(tmp_path):
    settings = bench_scale.settings_from_env({"BENCH_SCALE": "tiny"})
    path = tmp_path / "bench.toml"
    path.write_text(bench_scale.own_data_config(tmp_path, tiny_config(tmp_path / "x"), settings), encoding="utf-8")
    cfg = config.load(path)
    assert config.tasks(cfg) == ("translate",)
    assert cfg.translate_data.train == str(tmp_path / "corpus" / "train.{lang}.gz")
    assert all(str(v).startswith(str(tmp_path)) for v in cfg.section_dict("paths").values())
    assert (cfg.translate.max_steps, cfg.translate.dev_beam_width, cfg.prepare.max_train) == (5, 1, 0)
    assert cfg.translate.input == "files"  # training reads the large-corpus way
    assert cfg.translate.encoder_units == 16  # configs/tiny.toml's model


def test_a_process_is_measured_alone(tmp_path):
    # The test process has most likely imported TensorFlow (hundreds of MB): a child must not inherit that peak.
    allocate = "x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096])"
    small = bench_scale.measure([sys.executable, "-c", "pass"], tmp_path / "small.log")
    large = bench_scale.measure([sys.executable, "-c", allocate], tmp_path / "large.log")
    failed = bench_scale.measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "failed.log")
    assert small["exit"] == large["exit"] == 0 and failed["exit"] == 3
    assert small["peak_rss_mb"] < 60 and large["peak_rss_mb"] > 300


def _size(pairs: int, rss: float, seconds: float) -> dict:
    stage = {"seconds": seconds, "peak_rss_mb": rss}
    return {"pairs": pairs, "stages": {s: dict(stage) for s in bench_scale.STAGES}}


def test_ratios_compare_the_largest_size_with_the_smallest():
    r = bench_scale.ratios([_size(100, 100.0, 1.0), _size(200, 120.0, 1.0), _size(400, 200.0, 5.0)])
    assert (r["from_pairs"], r["to_pairs"], r["peak_rss"]["vocab"]) == (100, 400, 2.0)
    assert r["prepare_vocab_pairs_per_s"] == pytest.approx(0.8)  # 400 / 10 s against 100 / 2 s
    assert r["targets_met"] == {"peak_rss_ratio": False, "peak_rss_under_3gb": True, "prepare_vocab_throughput": True}
    assert bench_scale.ratios([_size(100, 1.0, 1.0), {"pairs": 400, "error": "x", "stages": {}}]) == {}


@needs_data
@pytest.mark.slow
def test_tiny_mode_end_to_end(tmp_path, raw_dir, monkeypatch):
    monkeypatch.setenv("BENCH_SCALE", "tiny")
    for name in ("BENCH_SCALE_SIZES", "BENCH_SCALE_STEPS", "BENCH_SCALE_KEEP"):
        monkeypatch.delenv(name, raising=False)
    cfg = tiny_config(tmp_path, raw=raw_dir)
    bench_scale.run(cfg)
    report = json.loads((Path(cfg.paths.reports) / "bench_scale.json").read_text(encoding="utf-8"))
    assert [s["pairs"] for s in report["sizes"]] == [1000, 3000] and report["steps"] == 5
    for size in report["sizes"]:
        assert "error" not in size and size["corpus"]["pairs"] == size["pairs"]
        for side in ("source", "target"):
            assert 0 < size["corpus"][side]["types"] < size["corpus"][side]["tokens"]
        assert list(size["stages"]) == list(bench_scale.STAGES)
        for name, m in size["stages"].items():
            assert m["seconds"] > 0 and 10 < m["peak_rss_mb"] < 3072
            assert (m["pairs_per_s"] > 0) if name != "train-translate" else (m["tokens_per_s"] > 0)
        assert size["stages"]["train-translate"]["steps"] == 5
    small, large = (s["corpus"]["source"]["types"] for s in report["sizes"])
    assert large > small
    assert set(report["ratios"]["peak_rss"]) == set(bench_scale.STAGES)
    assert report["ratios"]["prepare_vocab_pairs_per_s"] > 0 and report["machine"]["cores"]
    assert not (Path(cfg.paths.processed) / "bench_scale" / "1000").exists()  # deleted once measured
