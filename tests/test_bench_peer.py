"""`make bench-peer` without the peer's virtualenv (CI cannot build it): the peer's inputs are our tokens and
vocabularies in OpenNMT-tf's format, its run config has the issue's settings, both sides count the same tokens, and
the report's ratio and goal."""

import importlib.util
import os

import numpy as np
import pytest

from pipeline.core import vocab
from pipeline.core.errors import InputError
from pipeline.stages import bench_peer
from pipeline.translate import batches, corpus
from pipeline.translate.bench import real_tokens
from pipeline.translate.config import Translate
from tests.conftest import synthetic_pairs, tiny_config, write_parallel


def load_peer_script():
    """tools/peer/opennmt_train.py, whose pure parts import nothing of OpenNMT-tf."""
    spec = importlib.util.spec_from_file_location("opennmt_train", bench_peer.PEER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny(tmp_path):
    cfg = tiny_config(tmp_path)
    write_parallel(cfg, synthetic_pairs(30, seed=0))
    return cfg, batches.translation_examples(cfg, corpus.load_parallel(cfg, "train"))


def test_peer_inputs_are_our_tokens_in_opennmt_format(tiny, tmp_path):
    cfg, examples = tiny
    files = bench_peer.write_peer_inputs(cfg, examples, tmp_path / "peer")
    for side, name in ((0, "src"), (1, "tgt")):
        ours = vocab.load_named(cfg, name)
        theirs = files[f"{name}_vocab"].read_text(encoding="utf-8").splitlines()
        assert theirs[:3] == ["<blank>", "<s>", "</s>"]  # OpenNMT-tf's padding, start and end ids 0, 1, 2
        assert set(theirs[3:]) == set(ours) - set(vocab.SPECIALS["tgt"])
        lines = files[f"{name}_text"].read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(examples)
        for line, pair in zip(lines, examples, strict=True):
            # OpenNMT-tf splits on spaces: the same tokens, as many as our ids, so both sides count alike.
            assert line.split(" ") == [ours[i] for i in pair[side]]


def test_our_unknown_tokens_stay_unknown_for_the_peer(tiny):
    cfg, _ = tiny
    tokens = vocab.load_named(cfg, "tgt")
    line = bench_peer.detokenized(np.array([5, vocab.UNK_ID, 4]), tokens)
    assert line == f"{tokens[5]} <unk> {tokens[4]}"
    assert "<unk>" not in bench_peer.peer_vocabulary(tokens)  # so it falls into OpenNMT-tf's out-of-vocabulary bucket
    # Our target vocabulary (4 specials) and the peer's (3 specials + the <unk> bucket) have the same size.
    assert len(bench_peer.peer_vocabulary(tokens)) + 1 == len(tokens)


def test_a_token_with_white_space_is_refused(tiny, tmp_path):
    cfg, examples = tiny
    path = vocab.vocab_path(cfg, "src")
    path.write_text(path.read_text(encoding="utf-8") + "New York\n", encoding="utf-8")
    with pytest.raises(InputError, match="white space"):
        bench_peer.write_peer_inputs(cfg, examples, tmp_path / "peer")


def test_peer_run_config_has_the_issues_settings(tmp_path):
    files = {k: tmp_path / k for k in ("src_text", "tgt_text", "src_vocab", "tgt_vocab")}
    run = bench_peer.peer_run(Translate(), files, tmp_path / "model", warmup=10, steps=300)
    assert run["model"] == {
        "embedding_size": 256,
        "encoder_layers": 1,
        "encoder_units": 256,  # per direction: BiLSTM 256x2
        "decoder_layers": 1,
        "decoder_units": 512,
        "dropout": 0.3,
    }
    train = run["opennmt"]["train"]
    assert (train["batch_size"], train["batch_type"], train["length_bucket_width"]) == (64, "examples", 1)
    assert train["max_step"] == 310 and train["save_summary_steps"] == 10
    assert train["save_checkpoints_steps"] is None
    params = run["opennmt"]["params"]
    assert params["optimizer"] == "Adam" and params["learning_rate"] == Translate().learning_rate
    assert params["label_smoothing"] == 0.1 and params["optimizer_params"] == {"global_clipnorm": 1.0}
    assert run["opennmt"]["data"]["train_features_file"] == str(files["src_text"])


def test_peer_model_is_a_bilstm_with_luong_attention():
    script = bench_peer.PEER_SCRIPT.read_text(encoding="utf-8")
    for needed in ("bidirectional=True", "tfa.seq2seq.LuongAttention", "AttentionalRNNDecoder", "LSTMCell"):
        assert needed in script


def test_only_the_reference_architecture_is_compared():
    bench_peer.check_model(Translate())
    with pytest.raises(InputError, match="bahdanau"):
        bench_peer.check_model(Translate(attention="bahdanau"))
    with pytest.raises(InputError, match="input_feeding=False"):
        bench_peer.check_model(Translate(input_feeding=False))


def test_both_sides_count_real_source_and_target_tokens():
    src = np.array([[5, 6, 7], [8, 0, 0]])
    tgt_out = np.array([[9, 3, 0, 0], [9, 9, 9, 3]])  # y </s>, padded
    assert real_tokens((src, None, tgt_out)) == 4 + 6
    # The peer's figure: reports of 10 steps each at 2 and 1 steps/s (5 s and 10 s), the warm-up report left out.
    timed = load_peer_script().timed([(10, 9.0, 99999.0), (20, 2.0, 3000.0), (30, 1.0, 1500.0)], warmup=10, every=10)
    assert timed == {"steps": 20, "seconds": 15.0, "units_per_s": round((5 * 3000 + 10 * 1500) / 15, 1)}


def test_report_ratio_and_goal():
    host = {"cpu": "test", "cores": 2}
    met = bench_peer.summary({"train_tokens_per_s": 1000.0}, {"train_tokens_per_s": 1600.0}, Translate(), host)
    assert met["ratio"] == 1.6 and met["goal_met"] and met["goal"] == 1.5
    missed = bench_peer.summary({"train_tokens_per_s": 1000.0}, {"train_tokens_per_s": 1499.0}, Translate(), host)
    assert missed["ratio"] == 1.499 and not missed["goal_met"]
    assert missed["model"]["encoder_units"] == 256 and missed["ours_ties_output_to_embeddings"] is True


def test_steps_come_from_the_environment():
    assert bench_peer.steps_from_env({}) == (10, 300)
    assert bench_peer.steps_from_env({"BENCH_PEER_STEPS": "", "BENCH_PEER_WARMUP": ""}) == (10, 300)
    assert bench_peer.steps_from_env({"BENCH_PEER_STEPS": "30", "BENCH_PEER_WARMUP": "5"}) == (5, 30)
    with pytest.raises(InputError, match="multiple"):
        bench_peer.steps_from_env({"BENCH_PEER_STEPS": "25"})
    with pytest.raises(InputError, match="integers"):
        bench_peer.steps_from_env({"BENCH_PEER_STEPS": "many"})


def test_a_missing_peer_venv_says_how_to_make_it(tmp_path):
    with pytest.raises(InputError) as e:
        bench_peer.check_peer(tmp_path / ".venv-peer" / "bin" / "python")
    assert "make bench-peer" in e.value.hint
    assert os.fspath(tmp_path) in str(e.value)
