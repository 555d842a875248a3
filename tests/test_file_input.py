"""translate.input = "files": the training pairs read from the processed files in the graph (tokenized, looked up,
shuffled, bucketed by tf.data) give the pairs of the in-memory path, and train and resume alike."""

import json

import numpy as np
import pytest

from pipeline.core import vocab
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
        return [_rows(b) for b in batches.file_batches(cfg, files, 8, seed).as_numpy_iterator()]

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert sorted(r for b in first for r in b) == memory and len(memory) == 100
    assert all(len(b) <= 8 for b in first)
    assert first == again and first != other  # the seed makes the order: a resumed run can skip to its place
    for b in first:  # rows of a batch are of like length: buckets of width 2, as long as the longer side + </s>
        widths = [max(len(s), len(t) + 1) for s, t in b]
        assert max(widths) - min(widths) <= 1


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
    steps = [h["step"] for h in whole]  # a few partial batches, one a length bucket, end a file-based epoch
    assert steps == [h["step"] for h in stopped] and steps[:2] == [7, 14] and steps[-1] > 15
    assert whole[-1]["epoch"] == 1 and whole[0]["epoch"] == pytest.approx(7 / 15, abs=1e-3)
    np.testing.assert_allclose([h["loss"] for h in stopped], [h["loss"] for h in whole], rtol=1e-4)
