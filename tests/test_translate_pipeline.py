"""Translator end to end: the train-translate loop overfits 50 pairs through the in-graph string translator,
resumes after an interruption, refuses vocabularies it was not trained with, and (with DATA_MIRROR) runs every
stage from raw Multi30k to metrics.json on the tiny config."""

import json
import os
from pathlib import Path

import pytest
import tensorflow as tf

from pipeline import __main__ as cli
from pipeline.core.errors import InputError
from pipeline.translate import evaluate as translate_evaluate
from pipeline.translate import metrics as translate_metrics
from pipeline.translate import predict as translate_predict
from pipeline.translate import train as translate_train
from tests.conftest import (
    TINY_TRANSLATE,
    assert_best_weights_are_the_average,
    needs_data,
    synthetic_pairs,
    tiny_config,
    write_parallel,
)


def summaries(path):
    """The summary values of each record in a TensorBoard event file."""
    return [e.summary.value for e in tf.compat.v1.train.summary_iterator(str(path)) if e.HasField("summary")]


@pytest.mark.slow
def test_overfits_fifty_pairs_to_bleu_above_90(tmp_path, capsys):
    """The tiny config's model learns 50 pairs through the real loop, bucketing and string-in/string-out decoding."""

    settings = (
        *TINY_TRANSLATE,
        "translate.epochs=80",
        "translate.patience=80",
        "translate.learning_rate=0.01",
        "translate.lr_patience=99",
        "translate.batch_size=10",
        "translate.encoder_units=32",
        "translate.decoder_units=64",
    )
    cfg = tiny_config(tmp_path, *settings)
    pairs = synthetic_pairs(50, seed=0)
    write_parallel(cfg, pairs)
    translate_train.run(cfg)
    history = json.loads((tmp_path / "reports/translate/history.json").read_text())
    assert max(h["dev_bleu"] for h in history) > 90, [round(h["dev_bleu"], 1) for h in history]
    assert all(h["tokens_per_s"] > 0 and 0 <= h["padding"] < 0.5 for h in history)

    tags = {v.tag for f in (tmp_path / "models/translate/logs").glob("events.*") for e in summaries(f) for v in e}
    assert {"loss", "dev_bleu", "tokens_per_s", "padding", "lr", "dev_samples"} <= tags  # TensorBoard's view

    translate_evaluate.run(cfg)  # beam search (width 5) on the same pairs
    scores = json.loads((tmp_path / "reports/translate/metrics.json").read_text())
    assert scores["test"]["bleu"] > 90 and scores["test"]["signature"].startswith("nrefs:1|case:mixed")
    assert scores["search"]["beam_width"] == 5
    rows = (tmp_path / "reports/translate/translations.test.tsv").read_text().splitlines()
    assert len(rows) == 50 and all(r.count("\t") == 2 for r in rows)
    assert "| source | reference | hypothesis |" in (tmp_path / "reports/translate/metrics.md").read_text()

    translator = translate_predict.load_translator(cfg)
    out = translator.translate(tf.constant([pairs[0][0], "", "   ", "🙂 東京 שלום " * 50]))
    assert out["translation"].shape == (4,) and out["score"].shape == (4,)
    assert out["translation"][0].numpy().decode() == pairs[0][1]
    assert list(out["translation"].numpy()[1:3]) == [b"", b""] and list(out["score"].numpy()[1:3]) == [0, 0]
    from tests.conftest import TINY, path_overrides

    args = [f"--set={o}" for o in (*path_overrides(tmp_path), *settings)]
    assert cli.main(["translate", "--config", str(TINY), *args, pairs[1][0], ""]) == 0
    assert capsys.readouterr().out.split("\n")[-3:] == [pairs[1][1], "", ""]  # one line per input

    greedy = translate_predict.load_translator(cfg, search=cfg.translate.__class__(beam_width=1))
    assert translate_predict.translate_texts(greedy, [p[0] for p in pairs[:5]]) == [p[1] for p in pairs[:5]]


@pytest.mark.slow
def test_resumes_restarts_and_refuses_other_vocabularies(tmp_path, capsys):

    cfg = tiny_config(tmp_path, *TINY_TRANSLATE, "translate.epochs=2", "translate.patience=9")
    write_parallel(cfg, synthetic_pairs(30, seed=1))
    history = tmp_path / "reports/translate/history.json"
    translate_train.run(cfg)
    assert len(json.loads(history.read_text())) == 2
    # More epochs resume; so does another spelling of the same place (a relative path for an absolute one).
    elsewhere = f'paths.processed="{os.path.relpath(tmp_path / "processed")}"'
    translate_train.run(tiny_config(tmp_path, *TINY_TRANSLATE, "translate.epochs=3", "translate.patience=9", elsewhere))
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert [h["epoch"] for h in json.loads(history.read_text())] == [1, 2, 3]
    other = tiny_config(tmp_path, *TINY_TRANSLATE, "translate.epochs=1", "translate.decoder_units=16")
    translate_train.run(other)
    out = capsys.readouterr().out
    assert "discarding the checkpoint" in out and "translate.decoder_units: checkpoint 32, config 16" in out
    assert len(json.loads(history.read_text())) == 1

    write_parallel(other, synthetic_pairs(30, seed=1)[:3])  # a smaller vocabulary than the weights expect
    with pytest.raises(InputError, match=r"trained with vocabularies of \d+ / \d+ entries, but .* have \d+ / \d+"):
        translate_predict.load_translator(other)


def test_bleu_scores_are_sacrebleu_on_detokenized_text():
    s = translate_metrics.bleu_scores(["A man rides a bike.", "Hello"], ["A man rides a bike.", "Hello world"])
    assert 0 < s["bleu"] < 100 and s["chrf"] > 0 and s["sentences"] == 2
    assert "tok:13a" in s["signature"] and "nc:6|nw:0" in s["chrf_signature"]
    # A language written without spaces: sacreBLEU's tokenizer for it, since 13a would see one token a sentence.
    zh = translate_metrics.bleu_scores(["红色小狗在跳跃。"], ["红色小狗在跳跃。"], "zh")
    ja = translate_metrics.bleu_scores(["赤い犬が跳ぶ。"], ["赤い犬が跳ぶ。"], "ja")
    assert round(zh["bleu"], 6) == round(ja["bleu"], 6) == 100
    assert "tok:zh" in zh["signature"] and "tok:char" in ja["signature"]
    assert "tok:13a" in translate_metrics.bleu_scores(["Hallo"], ["Hallo"], "de")["signature"]


@pytest.mark.slow
@needs_data
@pytest.mark.data
def test_stages_from_raw_corpora_to_metrics(real_run, capsys):
    scores = json.loads((Path(real_run.paths.reports) / "translate/metrics.json").read_text())
    assert {"valid", "test"} <= set(scores)
    assert {"bleu", "chrf", "signature", "bp", "sentences"} <= set(scores["test"])
    sentences = ["A man is riding a bicycle .", ""]
    translations = translate_predict.translate_texts(translate_predict.load_translator(real_run), sentences)
    assert len(translations) == 2 and translations[1] == ""  # an empty sentence translates to ""
    capsys.readouterr()
    translate_predict.translate_main(real_run, sentences)
    assert capsys.readouterr().out == f"{translations[0]}\n\n"  # one line per input, and nothing else


@pytest.mark.slow
def test_an_averaged_translator_is_scored_and_saved_as_its_average(tmp_path, capsys):
    cfg = tiny_config(tmp_path, *TINY_TRANSLATE, "translate.epochs=1", "translate.average_decay=0.9")
    write_parallel(cfg, synthetic_pairs(60, seed=2))
    translate_train.run(cfg)
    assert "(weights " in capsys.readouterr().out  # the weights' own dev BLEU beside the average's
    history = json.loads((Path(cfg.paths.reports) / "translate/history.json").read_text())
    assert set(history[0]) >= {"dev_bleu", "dev_bleu_unaveraged"}
    model = translate_train.build_translator(cfg)[0]
    assert_best_weights_are_the_average(model, Path(cfg.paths.models) / "translate")
