"""NER end to end: resuming training, the CLI-facing tagger, metrics, and (with DATA_MIRROR) every stage
from raw CoNLL-2003 to metrics.json on the tiny config."""

import doctest
import json
from pathlib import Path

import pytest

from pipeline.core.trainer import out_of_time
from pipeline.ner import metrics as ner_metrics
from pipeline.ner import predict as ner_predict
from pipeline.ner import train as ner_train
from tests.conftest import TINY_NER, needs_data, synthetic, tiny_config, write_corpus


def test_metrics_examples():
    assert doctest.testmod(ner_metrics).failed == 0


def test_strict_iob2_spans_and_scores():
    gold = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "B-ORG"]]
    assert ner_metrics.entity_scores(gold, gold)["f1"] == 1.0
    stray = [["I-PER", "I-PER", "O"], ["B-LOC", "O", "B-ORG"]]  # strict: an entity must start with B-
    s = ner_metrics.entity_scores(gold, stray)
    assert s["per_type"]["PER"]["recall"] == 0.0 and s["precision"] == 1.0 and s["recall"] == 2 / 3
    with pytest.raises(ValueError):
        ner_metrics.entity_scores(gold, [["O"], ["O"]])


def test_a_time_budget_stops_before_an_epoch_that_would_overrun_it():

    assert not out_of_time(0.0, 0, 1.0)  # the first epoch always runs
    assert not out_of_time(20.0, 1, 1.0)  # a second 20-s epoch ends at 40 s, inside 60 s
    assert out_of_time(40.0, 1, 1.0)  # a second 40-s epoch would end at 80 s
    assert not out_of_time(1e9, 5, 0)  # 0: no budget


@pytest.mark.slow
def test_resumes_and_restarts(tmp_path, capsys):

    base = tmp_path / "run"
    write_corpus(tiny_config(base), synthetic(12, seed=1))
    history = Path(tiny_config(base).paths.reports) / "ner/history.json"

    ner_train.run(tiny_config(base, *TINY_NER, "ner.epochs=2", "ner.patience=9"))
    assert len(json.loads(history.read_text())) == 2 and json.loads(history.read_text())[-1]["stopped_by"] == "epochs"
    # More epochs resume where the last run stopped ...
    ner_train.run(tiny_config(base, *TINY_NER, "ner.epochs=3", "ner.patience=9"))
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert [h["epoch"] for h in json.loads(history.read_text())] == [1, 2, 3]
    # A wall-time budget that the next epoch would overrun ends training before it (the time spent is resumed too).
    ner_train.run(tiny_config(base, *TINY_NER, "ner.epochs=9", "ner.patience=9", "ner.max_minutes=1e-6"))
    assert [h["epoch"] for h in json.loads(history.read_text())] == [1, 2, 3]
    assert json.loads(history.read_text())[-1]["stopped_by"] == "max_minutes"  # and it says so
    assert "stopped by the wall-time budget (max_minutes)" in capsys.readouterr().out
    # ... but another model starts over.
    cfg = tiny_config(base, *TINY_NER, "ner.epochs=1", "ner.units=8", "ner.output=softmax")
    ner_train.run(cfg)
    assert "discarding the checkpoint" in capsys.readouterr().out
    assert len(json.loads(history.read_text())) == 1
    assert json.loads((Path(cfg.paths.models) / "ner/tagger.json").read_text())["ner"]["units"] == 8

    ner_predict.tag_main(cfg, ["Mary visited Paris .", ""])
    lines = capsys.readouterr().out.splitlines()
    assert "Paris" in lines[0] and lines[0].endswith(".")
    assert lines[-1] == ""  # the empty sentence: no tokens, no entities


@pytest.mark.slow
@needs_data
@pytest.mark.data
def test_stages_from_raw_corpora_to_metrics(real_run):
    cfg, reports = real_run, Path(real_run.paths.reports)
    scores = json.loads((reports / "ner/metrics.json").read_text())
    assert cfg.ner.doc_memory  # the tiny config, as the default, tags documents
    assert set(scores) == {"valid", "test", "sentences_alone"}
    assert set(scores.pop("sentences_alone")) == {"valid", "test"}
    for split in scores.values():
        assert {"precision", "recall", "f1", "support", "per_type"} <= set(split)
        assert set(split["per_type"]) <= {"PER", "LOC", "ORG", "MISC"}
        assert set(next(iter(split["per_type"].values()))) == {"precision", "recall", "f1", "support"}
    assert scores["test"]["f1"] > 0
    assert (reports / "ner/metrics.md").read_text().count("|") > 20
    for split in ("valid", "test"):  # Viterbi keeps to valid IOB2: an I-X only continues its own span
        previous = "O"
        for line in (reports / f"ner/predictions.{split}.tsv").read_text().splitlines():
            tag = line.split("\t")[2] if line else "O"
            assert not tag.startswith("I-") or previous in (f"B-{tag[2:]}", tag), (split, line)
            previous = tag
