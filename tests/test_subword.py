"""SentencePiece subwords for the translator (translate.data.tokenizer = "sentencepiece"): the vocab stage trains
the model, the embed stage trains piece vectors, and training, evaluation and the exported graph cut text with
the same serialized model through tensorflow-text's ops."""

import dataclasses
import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core import config, serving, stages, trainer
from pipeline.core.errors import InputError
from pipeline.stages import embed as embed_stage
from pipeline.stages import export as export_stage
from pipeline.stages import vocab as vocab_stage
from pipeline.translate import evaluate as translate_evaluate
from pipeline.translate import export as translate_export
from pipeline.translate import predict as translate_predict
from pipeline.translate import subword
from pipeline.translate import train as translate_train
from tests.conftest import ROOT, TINY, TINY_TRANSLATE, synthetic_pairs, tiny_config, write_processed_pairs
from tests.test_export import run_serving_check, serve_in_fresh_process

SP = (
    'ner.data.train=""',  # the translator alone
    "translate.data.tokenizer=sentencepiece",
    "translate.data.subword_size=400",
    "embed.w2v_dim=16",
    "embed.w2v_min_count=1",
)
# Seeded-noise piece vectors: Word2Vec trained on 50 short pairs gives rows so alike that the tied output layer
# learns far more slowly (measured: dev BLEU 31 against 100 after 80 epochs).
OVERFIT = (
    *TINY_TRANSLATE,
    "translate.data.subword_vectors=random",
    "embed.w2v_dim=32",
    "translate.patience=80",
    "translate.learning_rate=0.01",
    "translate.lr_patience=99",
    "translate.batch_size=10",
    "translate.encoder_units=32",
    "translate.decoder_units=64",
)


def subword_run(base: Path, pairs, *overrides: str):
    """The vocab and embed stages, run for real on `pairs` as every processed split."""
    cfg = tiny_config(base, *SP, *overrides)
    write_processed_pairs(cfg, pairs)
    vocab_stage.run(cfg)
    embed_stage.run(cfg)
    return cfg


@pytest.fixture(scope="module")
def pieces_cfg(tmp_path_factory):
    return subword_run(tmp_path_factory.mktemp("subword") / "run", synthetic_pairs(50, seed=0))


def test_vocab_and_embed_stages_write_one_model_its_pieces_and_piece_vectors(pieces_cfg, capsys):
    cfg = pieces_cfg
    vocab_dir = Path(cfg.paths.vocab)
    model = (vocab_dir / "src.spm").read_bytes()
    assert (vocab_dir / "tgt.spm").read_bytes() == model  # joint: one model, one vocabulary
    tokens = (vocab_dir / "src.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert tokens[:5] == ["<pad>", "<unk>", "<s>", "</s>", "<0x00>"] and tokens == subword.pieces(model)
    # A soft limit: 50 short pairs hold fewer than 400 pieces, and get what they hold rather than an error.
    assert 300 < len(tokens) <= 400 and "▁man" in tokens and "▁Man" in tokens
    report = json.loads((Path(cfg.paths.reports) / "vocab.json").read_text())
    assert report["tgt"]["train"]["oov_token_rate"] == 0 and report["src"]["size"] == len(tokens)
    vectors = json.loads((Path(cfg.paths.reports) / "embeddings.json").read_text())
    assert vectors["src"]["vectors"] == vectors["tgt"]["vectors"] == "word2vec-trained"
    assert ".pieces." in vectors["src"]["file"] and vectors["src"]["tokens"]["train"]["missing"] == 0
    assert np.load(Path(cfg.paths.embeddings) / "src.npy").shape == (len(tokens), 16)

    vocab_stage.run(cfg)  # the same settings and text: the trained model is reused, not trained again
    assert "reusing" in capsys.readouterr().out and (vocab_dir / "src.spm").read_bytes() == model
    (cached,) = vocab_dir.glob("spm.*.model")
    cached.write_bytes(b"damaged")  # a damaged cache is trained again, to the same model
    vocab_stage.run(cfg)
    assert "training it again" in capsys.readouterr().out and cached.read_bytes() == model


def test_bpe_one_model_per_side_and_random_piece_vectors(tmp_path, capsys):
    separate = (
        "translate.data.subword_joint=false",
        "translate.data.subword_vectors=random",
        "translate.data.subword_type=bpe",
    )
    cfg = subword_run(tmp_path, synthetic_pairs(50, seed=0), *separate, "translate.data.subword_max_length=6")
    out = capsys.readouterr().out
    assert re.search(r"warning: tgt: \d+ train, \d+ valid, \d+ test sentences reach .*subword_max_length=6 pieces", out)
    src, tgt = (Path(cfg.paths.vocab) / f"{side}.spm" for side in subword.SIDES)
    assert src.read_bytes() != tgt.read_bytes()
    assert "▁Man" in subword.pieces(tgt.read_bytes()) and "▁Man" not in subword.pieces(src.read_bytes())
    report = json.loads((Path(cfg.paths.reports) / "embeddings.json").read_text())
    assert report["src"]["vectors"] == "random" and not list(Path(cfg.paths.embeddings).glob("w2v.*"))


@pytest.fixture(scope="module")
def long_tokenizer(pieces_cfg):
    """The tgt tokenizer with room for any 40 characters (byte fallback spends up to 4 pieces on one)."""
    return subword.Tokenizer(dataclasses.replace(pieces_cfg, translate_data=dataclasses.replace(
        pieces_cfg.translate_data, subword_max_length=1000)), "tgt")  # fmt: skip


SPACES = "▁\x0b\x1f\x85"  # read as spaces: SentencePiece's marker, and whitespace to Python that RE2's \s misses


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(SPACES + " ab"), max_size=40),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["basic", "none"]),
)
def test_detokenize_inverts_tokenize_on_any_unicode(long_tokenizer, sentences, form):
    """Byte fallback spells any character the model lacks, so no text is lost, invented or turned into <unk>;
    U+2581, SentencePiece's own space marker, and whitespace that RE2 does not know as such read as spaces."""
    cfg = dataclasses.replace(long_tokenizer.cfg, text=dataclasses.replace(long_tokenizer.cfg.text, normalize=form))
    tokens = long_tokenizer.tokenize(tf.constant(sentences, tf.string))
    normalised = subword.normalize(tf.constant(sentences, tf.string), cfg).numpy().tolist()
    if form == long_tokenizer.cfg.text.normalize:  # the tokenizer's own
        assert long_tokenizer.detokenize(tokens).numpy().tolist() == normalised
    assert b"<unk>" not in tokens.flat_values.numpy().tolist()
    assert not any(c in t.decode("utf-8") for t in normalised for c in SPACES)  # so no piece can hold one


def test_tokenizer_keys_rerun_only_the_stages_that_read_them():
    names = ("prepare", "vocab", "embed", "train-translate", "evaluate-translate", "export-translate")
    stamp = {s: functools.partial(stages.reads, name=s) for s in names}
    words, other_size = config.load(TINY), config.load(TINY, ["translate.data.subword_size=16000"])
    pieces = config.load(TINY, ["translate.data.tokenizer=sentencepiece"])
    random = config.load(TINY, ["translate.data.tokenizer=sentencepiece", "translate.data.subword_vectors=random"])
    assert all(f(words) == f(other_size) for f in stamp.values())  # a subword key with words: nothing reruns
    assert stamp["prepare"](words) == stamp["prepare"](pieces) and stamp["vocab"](words) != stamp["vocab"](pieces)
    assert stamp["vocab"](pieces) == stamp["vocab"](random) and stamp["embed"](pieces) != stamp["embed"](random)
    assert stamp["train-translate"](words) != stamp["train-translate"](pieces)
    # A checkpoint records what the train stage reads: a key that does nothing never discards it.
    assert trainer.run_settings(words, "translate") == trainer.run_settings(other_size, "translate")
    assert trainer.run_settings(pieces, "translate") != trainer.run_settings(random, "translate")


def test_a_missing_corrupt_or_foreign_model_names_the_file(pieces_cfg, tmp_path):
    cfg = tiny_config(tmp_path, *SP)
    shutil.copytree(pieces_cfg.paths.vocab, cfg.paths.vocab)
    model = Path(cfg.paths.vocab) / "src.spm"
    model.unlink()
    with pytest.raises(InputError, match=r"src\.spm: SentencePiece model not found"):
        subword.Tokenizer(cfg, "src")
    for damaged in (b"not a model", b""):
        model.write_bytes(damaged)
        with pytest.raises(InputError, match=r"src\.spm: not a SentencePiece model"):
            subword.Tokenizer(cfg, "src")
    other = subword_run(tmp_path / "other", synthetic_pairs(50, seed=0), "translate.data.subword_size=320")
    shutil.copy(Path(other.paths.vocab) / "src.spm", model)
    lines = len((Path(cfg.paths.vocab) / "src.txt").read_text(encoding="utf-8").split("\n")) - 1
    foreign = rf"src\.spm: a SentencePiece model of 320 pieces .* {lines} lines of .*src\.txt"
    with pytest.raises(InputError, match=foreign):
        subword.Tokenizer(cfg, "src")


@pytest.mark.slow
def test_overfits_fifty_pairs_through_pieces_and_serves_without_the_project(tmp_path):
    pairs = synthetic_pairs(50, seed=0)
    cfg = subword_run(tmp_path, pairs, *OVERFIT, "translate.epochs=70")
    translate_train.run(cfg)
    history = json.loads((tmp_path / "reports/translate/history.json").read_text())
    assert max(h["dev_bleu"] for h in history) > 90, [round(h["dev_bleu"], 1) for h in history]
    translate_evaluate.run(cfg)  # beam 5
    assert json.loads((tmp_path / "reports/translate/metrics.json").read_text())["test"]["bleu"] > 90

    greedy = translate_predict.load_translator(cfg, search=cfg.translate.__class__(beam_width=1))
    assert translate_predict.translate_texts(greedy, [p[0] for p in pairs[:5]]) == [p[1] for p in pairs[:5]]
    module = translate_export.translate_module(cfg)
    nbest = module.nbest(tf.constant([pairs[0][0], ""]))
    assert nbest["translation"].shape == (2, cfg.translate.beam_width)
    assert nbest["translation"][0, 0].numpy().decode() == pairs[0][1]

    export_stage.run_translate(cfg)
    ops = serving.op_types(Path(cfg.paths.models) / "translate/1")
    assert {"SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceDetokenizeOp"} <= ops
    assert not serving.forbidden_ops(ops)
    texts = [p[0] for p in pairs[:8]] + ["", "🙂 東京 " * 80]
    got = serve_in_fresh_process(cfg, {"translate": {"serving_default": {"text": texts}}}, tmp_path, text_ops=True)
    translator = translate_predict.load_translator(cfg)
    want = [t.decode() for t in translator.translate(tf.constant(texts))["translation"].numpy()]
    assert got["translate"]["serving_default"]["translation"] == want and want[:8] == [p[1] for p in pairs[:8]]
    # TF Serving 2.20's runtime (TensorFlow 2.20 + tensorflow-text 2.20), in Python and through the C++ loader.
    cpp = ("--cpp", str(ROOT / "build/load_savedmodel")) if shutil.which("c++") else ()
    built = (".venv-serving/.installed", "build/load_savedmodel") if cpp else (".venv-serving/.installed",)
    (line,) = run_serving_check(cfg, *cpp, targets=built, models=1)
    assert not cpp or "serving_default calls equal through the C++ loader" in line, line

    meta = Path(cfg.paths.models) / "translate/translator.json"  # weights trained on other pieces are refused
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps(record | {"subword": {"src": "0" * 64, "tgt": "0" * 64}}))
    with pytest.raises(InputError, match=r"trained on other tokens than .*src\.spm"):
        translate_predict.load_translator(cfg)


# A script without spaces: every English word has a two-character Chinese word, and the sentence is written solid.
CHINESE = dict(
    zip(
        "man woman dog child ball red blue runs jumps sits on the a in park street water green big small".split(),
        "男人 女人 小狗 孩子 皮球 红色 蓝色 奔跑 跳跃 坐着 上面 这个 一个 里面 公园 街道 清水 绿色 大的 小的".split(),
        strict=True,
    )
)


@pytest.mark.slow
def test_a_script_without_spaces_trains_exports_and_translates_without_unk(tmp_path):
    pairs = [(s, "".join(CHINESE[w] for w in s.split()) + "。") for s, _ in synthetic_pairs(60, seed=2)]
    cfg = subword_run(tmp_path, pairs, *OVERFIT, "translate.epochs=70", "translate.data.target_lang=zh")
    tgt_pieces = (Path(cfg.paths.vocab) / "tgt.txt").read_text(encoding="utf-8").split("\n")
    assert any(len(p.lstrip("▁")) >= 2 and p.lstrip("▁") in "".join(CHINESE.values()) for p in tgt_pieces)
    translate_train.run(cfg)
    translate_evaluate.run(cfg)
    scores = json.loads((tmp_path / "reports/translate/metrics.json").read_text())["test"]
    assert scores["bleu"] > 80 and "|tok:zh|" in scores["signature"]  # 13a would see one token a sentence
    export_stage.run_translate(cfg)
    texts = [p[0] for p in pairs[:10]] + ["a man in the water"]
    got = serve_in_fresh_process(cfg, {"translate": {"serving_default": {"text": texts}}}, tmp_path, text_ops=True)
    out = got["translate"]["serving_default"]["translation"]
    allowed = set("".join(CHINESE.values())) | {"。"}
    assert all(o and set(o) <= allowed for o in out), out  # no <unk> (⁇), no spaces, no stray bytes
    assert sum(o == p[1] for o, p in zip(out, pairs, strict=False)) >= 8, out
