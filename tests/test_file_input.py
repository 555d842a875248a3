"""translate.input = "files": the training pairs read from the processed files in the graph (tokenized, looked up,
shuffled, sorted in pools and batched by tf.data) give the pairs of the in-memory path, and train and resume alike."""

import json

import numpy as np
import pytest

from pipeline.core import vocab
from pipeline.core.errors import InputError
from pipeline.core.files import write_lines
from pipeline.stages import prepare as prepare_stage
from pipeline.translate import batches, corpus
from pipeline.translate import train as translate_train
from tests.conftest import TINY_TRANSLATE, synthetic_pairs, tiny_config, write_parallel


def _rows(batch) -> list[tuple[tuple, tuple]]:
    """(source ids, target ids) per row of a (src, tgt_in, tgt_out) batch, padding, <s> and </s> taken off."""
    src, tgt_in, tgt_out = batch
    out = []
    for s, t_in, t_out in zip(src, tgt_in, tgt_out, strict=True):
        t = t_out[t_out != vocab.PAD_ID]
        assert t[-1] == vocab.EOS_ID and t_in[0] == vocab.BOS_ID and list(t_in[1 : len(t)]) == list(t[:-1])
        out.append((tuple(s[s != vocab.PAD_ID]), tuple(t[:-1])))
    return out


def test_file_batches_hold_every_pair_once_with_the_ids_of_the_memory_path(tmp_path):
    cfg = tiny_config(tmp_path, "translate.batch_size=8")
    pairs = synthetic_pairs(100, seed=5) + [("", "Empty source.")]  # a pair with an empty side is dropped
    write_parallel(cfg, pairs)
    files = corpus.train_files(cfg)
    examples = batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    memory = sorted((tuple(s), tuple(t)) for s, t in examples)

    def epoch(seed):
        raw = list(batches.file_batches(cfg, files, 8, seed).as_numpy_iterator())
        for src, tgt_in, _ in raw:  # each batch cut to its own longest row
            assert (src[:, -1] != vocab.PAD_ID).any() and (tgt_in[:, -1] != vocab.PAD_ID).any()
        return [_rows(b) for b in raw]

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert sorted(r for b in first for r in b) == memory and len(memory) == 100
    # Full batches but one, as in memory: no end-of-epoch sweep of part-full length buckets down to single pairs.
    assert sorted(len(b) for b in first) == [4] + [8] * 12
    assert first == again and first != other  # the seed makes the order: a resumed run can skip to its place
    # One pool of 50 batches holds these 100 pairs: sorted by length (the longer side, </s> counted), cut into
    # batches, whose order is shuffled.
    widths = [sorted(max(len(s), len(t) + 1) for s, t in b) for b in first]
    by_length = sorted(widths)
    assert all(a[-1] <= b[0] for a, b in zip(by_length, by_length[1:], strict=False)) and widths != by_length


def test_a_batch_of_long_pairs_is_cut_to_the_token_cap_in_both_paths_alike(tmp_path):
    """translate.batch_tokens bounds rows x the longer side (</s> counted) of every batch, memory and files: the
    short pairs' batches stay whole, the long ones' are cut into equal parts, and every pair is still trained once."""
    cfg = tiny_config(tmp_path, "translate.batch_size=8", "translate.batch_tokens=40")
    long = [(f"{s} {s} {s}", f"{t} {t} {t}") for s, t in synthetic_pairs(16, seed=8)]
    write_parallel(cfg, synthetic_pairs(48, seed=7) + long)
    examples = batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))
    width = {(tuple(s), tuple(t)): max(len(s), len(t) + 1) for s, t in examples}
    memory = list(batches.translation_batches(examples, 8, seed=1, max_tokens=40))
    files = list(batches.file_batches(cfg, corpus.train_files(cfg), 8, seed=1).as_numpy_iterator())
    for got in (memory, files):
        rows = [_rows(b) for b in got]
        assert sorted(r for b in rows for r in b) == sorted(width)
        for b in rows:
            longest = max(width[r] for r in b)
            assert len(b) * longest <= 40 or len(b) == 1
        assert sum(len(b) < 8 for b in rows) >= 4  # the two batches of long pairs, cut in two or more each
    # One pool holds all 64 pairs, sorted by the same lengths in both paths: the same cuts.
    assert sorted(len(_rows(b)) for b in memory) == sorted(len(_rows(b)) for b in files)
    assert [len(b) for b in batches.batch_plan(examples, 8, seed=1)] == [8] * 8  # no cap: whole batches


@pytest.mark.slow
def test_files_input_trains_stops_at_a_step_and_resumes_mid_epoch_like_an_uninterrupted_run(tmp_path, capsys):
    """Evaluations every 7 steps over one epoch: once straight through, once stopped at step 7 (max_steps) and
    resumed from that mid-epoch checkpoint; the same history either way."""
    settings = (*TINY_TRANSLATE, "translate.input=files", "translate.batch_size=8", "translate.eval_every=7")
    settings += ("translate.epochs=1", "translate.patience=9")
    histories = {}
    for name in ("whole", "stopped"):
        cfg = tiny_config(tmp_path / name, *settings)
        write_parallel(cfg, synthetic_pairs(120, seed=6))
        if name == "stopped":
            translate_train.run(tiny_config(tmp_path / name, *settings, "translate.max_steps=7"))
            assert "stopped by the step limit" in capsys.readouterr().out
        translate_train.run(cfg)
        histories[name] = json.loads((tmp_path / name / "reports/translate/history.json").read_text())
    assert "resuming at step 7 (batch 7 of epoch 1)" in capsys.readouterr().out
    whole, stopped = histories["whole"], histories["stopped"]
    steps = [h["step"] for h in whole]  # 120 pairs in 15 batches of 8
    assert steps == [h["step"] for h in stopped] == [7, 14, 15]
    assert whole[-1]["epoch"] == 1 and whole[0]["epoch"] == pytest.approx(7 / 15, abs=1e-3)
    np.testing.assert_allclose([h["loss"] for h in stopped], [h["loss"] for h in whole], rtol=1e-4)


def test_prepare_deals_training_pairs_to_shards_and_the_manifest_names_a_damaged_one(tmp_path):
    """500 training pairs at prepare.shard_pairs=120: five shards, each a random draw from the whole corpus, every
    pair once; valid keeps its order; a truncated or edited shard stops the reader with the file named."""
    pairs = [(f"{s} n{i}", f"N{i} {t}") for i, (s, t) in enumerate(synthetic_pairs(500, seed=3))]
    write_lines(tmp_path / "own/train.tsv", [f"{s}\t{t}" for s, t in pairs])
    write_lines(tmp_path / "own/dev.tsv", [f"{s}\t{t}" for s, t in pairs[:30]])
    own = [f'translate.data.{k}="{tmp_path / "own" / f}"' for k, f in (("train", "train.tsv"), ("valid", "dev.tsv"))]
    own += [f'translate.data.test="{tmp_path / "own/dev.tsv"}"', 'ner.data.train=""', "prepare.max_train=0"]
    cfg = tiny_config(tmp_path, *own, "prepare.shard_pairs=120")
    prepare_stage.run(cfg)
    shards = corpus.read_manifest(cfg)["splits"]["train"]["shards"]
    assert [e["file"] for e in shards] == [f"train-{i:05d}-of-00005.tsv" for i in range(5)]
    assert sum(e["pairs"] for e in shards) == 500 and all(80 <= e["pairs"] <= 120 for e in shards)
    assert sorted(corpus.load_parallel(cfg, "train")) == sorted(pairs)
    first = [pairs.index(p) for p in corpus.iter_pairs(cfg, "train")][: shards[0]["pairs"]]
    assert min(first) < 50 and max(first) > 450  # dealt at random, not cut in runs
    assert corpus.load_parallel(cfg, "valid") == pairs[:30]  # evaluation splits keep their order

    again = tiny_config(tmp_path, *own)  # the default shard size: one shard in corpus order, the old five gone
    prepare_stage.run(again)
    assert corpus.load_parallel(again, "train") == pairs
    assert sorted(p.name for p in corpus.directory(cfg).glob("train-*")) == ["train-00000-of-00001.tsv"]

    shard = corpus.directory(cfg) / "train-00000-of-00001.tsv"
    data = shard.read_bytes()
    shard.write_bytes(data[:-7])
    with pytest.raises(InputError, match=rf"{shard}: .* bytes, but .*manifest.json records .*truncated or edited"):
        corpus.train_files(again)
    shard.write_bytes(data.replace(b"n1\t", b"n7\t", 1))  # the same size, another text
    with pytest.raises(InputError, match=rf"{shard}: its sha256 differs"):
        corpus.load_parallel(again, "train")


def test_a_corpus_larger_than_the_shuffle_buffer_is_still_shuffled_across_shards(tmp_path):
    """400 pairs in four shards through a 16-pair shuffle buffer: the first batches already mix pairs from all
    over the corpus (one file read in order through that buffer would give only its first ~50)."""
    cfg = tiny_config(tmp_path, "translate.batch_size=8", "translate.shuffle_buffer=16", "prepare.shard_pairs=100")
    pairs = [(f"{s} n{i}", f"N{i} {t}") for i, (s, t) in enumerate(synthetic_pairs(400, seed=4))]
    write_parallel(cfg, pairs)  # vocabularies; then the training split as four shards
    corpus.write_processed(cfg, {"train": pairs}, {"train": 400})
    files = corpus.train_files(cfg)
    assert len(files) == 4
    index = {(tuple(s), tuple(t)): i for i, (s, t) in enumerate(batches.translation_examples(cfg, pairs))}
    rows = [r for b in batches.file_batches(cfg, files, 8, seed=1).as_numpy_iterator() for r in _rows(b)]
    assert sorted(index[r] for r in rows) == list(range(400))
    early = [index[r] for r in rows[:32]]
    assert {i // 100 for i in early} == {0, 1, 2, 3} and max(early) > 300
