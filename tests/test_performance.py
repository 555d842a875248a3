"""Speed guarantees that are behaviour, not timings: one trace per train / decode function for a whole epoch of
bucketed batches of every shape, and recurrent layers that meet cuDNN's conditions (so a GPU uses the fast
kernel). The numbers themselves come from `make bench`."""

import keras
import pytest
import tensorflow as tf

from pipeline.core import optim
from pipeline.ner import corpus as ner_corpus
from pipeline.ner import features as ner_features
from pipeline.ner import predict as ner_predict
from pipeline.ner import train as ner_train
from pipeline.stages import bench as bench_stage
from pipeline.translate import batches as translate_batches
from pipeline.translate import predict as translate_predict
from pipeline.translate import train as translate_train
from tests.conftest import (
    TINY_NER,
    TINY_TRANSLATE,
    synthetic,
    synthetic_pairs,
    tiny_config,
    write_corpus,
    write_parallel,
)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("perf"), *TINY_NER, *TINY_TRANSLATE, "translate.batch_size=8")
    write_corpus(cfg, synthetic(60, seed=2), doc_size=5)  # documents, as the default tagger trains on
    write_parallel(cfg, synthetic_pairs(120, seed=2))
    return cfg


def test_translate_train_and_decode_trace_once_per_epoch(cfg):
    examples = translate_batches.translation_examples(cfg, synthetic_pairs(125, seed=2))  # a last, smaller batch
    model = translate_train.build_translator(cfg)[0]
    step = translate_train.make_translate_step(model, optim.LazyAdam(1e-3), cfg.translate)
    shapes = set()
    for epoch in (1, 2):
        for src, tgt_in, tgt_out in translate_batches.translation_batches(
            examples, cfg.translate.batch_size, seed=epoch
        ):
            shapes.add((src.shape, tgt_in.shape))
            step(src, tgt_in, tgt_out)
    assert len(shapes) > 5 and len({s[0][0] for s in shapes}) == 2  # many batch shapes ...
    assert step.experimental_get_tracing_count() == 1  # ... one trace

    translator = translate_predict.Translator(model, cfg)
    translate_predict.translate_texts(translator, [s for s, _ in synthetic_pairs(50, seed=5)], batch_size=7)
    assert translator.translate.experimental_get_tracing_count() == 1


def test_ner_train_and_decode_trace_once_per_epoch(cfg):
    import dataclasses

    documents = ner_corpus.load_ner_documents(cfg, "train")
    sentences = [s for d in documents for s in d]
    model, tags, _ = ner_train.build_tagger(cfg)
    step = ner_train.make_train_step(model, ner_train.make_optimizer(cfg.ner), cfg.ner)
    features = ner_features.NerFeatures(cfg)
    for doc_memory in (True, False):  # whole-document batches (the default) and sentences of similar length
        c = dataclasses.replace(cfg, ner=dataclasses.replace(cfg.ner, doc_memory=doc_memory))
        shapes = set()
        for epoch in (1, 2):
            batches, n = ner_train.epoch_batches(c, documents, tags, features, seed=epoch)
            for feats, y in batches:
                shapes.add(tuple(y.shape))
                step(feats, y)
                n -= 1
            assert n == 0  # the count the progress bar shows
        assert len(shapes) > 3 and step.experimental_get_tracing_count() == 1
    tagger = ner_predict.TrainedTagger(model, features, tags, ner_predict.make_decoder(model, features))
    ner_predict.predict_tags(tagger, [w for w, _ in sentences])
    ner_predict.predict_tags(tagger, [w for w, _ in sentences], ner_predict.document_ids(documents))
    assert tagger.decode.experimental_get_tracing_count() == 1


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Bidirectional):
            out += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, keras.layers.LSTM | keras.layers.GRU):
            out.append(layer)
    return out


def cudnn_eligible(layer) -> bool:
    """Keras 3's conditions for the cuDNN kernel (keras/src/backend/tensorflow/rnn.py: cudnn_ok)."""
    cell = layer.cell
    ok = (
        cell.activation is keras.activations.tanh
        and cell.recurrent_activation is keras.activations.sigmoid
        and cell.recurrent_dropout == 0
        and not layer.unroll
        and cell.use_bias
        and layer.use_cudnn in ("auto", True)
    )
    return ok and (not isinstance(layer, keras.layers.GRU) or cell.reset_after)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_every_recurrent_layer_meets_cudnn_conditions(cfg, rnn):
    import dataclasses

    tagger_cfg = dataclasses.replace(cfg, ner=dataclasses.replace(cfg.ner, rnn=rnn, char_encoder="lstm"))
    tagger, _, _ = ner_train.build_tagger(tagger_cfg)
    translator = translate_train.build_translator(
        dataclasses.replace(cfg, translate=dataclasses.replace(cfg.translate, cell=rnn))
    )[0]
    from pipeline.lm import model as lm_model
    from pipeline.lm.config import Lm

    lm = lm_model.build(Lm(cell=rnn, units=8, layers=2, embed_dim=4), 10)
    layers = recurrent_layers(tagger) + recurrent_layers(translator) + recurrent_layers(lm)
    assert len(layers) >= 6
    assert all(cudnn_eligible(layer) for layer in layers), [layer.name for layer in layers if not cudnn_eligible(layer)]
    translator.set_use_cudnn(False)  # what export does: the check itself must be able to fail
    assert not any(cudnn_eligible(layer) for layer in recurrent_layers(translator))


def test_right_padded_masks_never_have_an_empty_row(cfg):
    """cuDNN asserts on an all-padding row: training drops empty pairs, and decoding gives empty input one <unk>."""
    examples = translate_batches.translation_examples(cfg, [("man runs", "Runs Man."), ("", "Man."), ("dog", " ")])
    assert len(examples) == 1
    src, tgt_in, tgt_out = next(translate_batches.translation_batches(examples * 3, 4, seed=0))
    for ids in (src, tgt_in, tgt_out):
        real = ids != 0
        assert real.sum(axis=1).min() >= 1 and (real[:, :-1] | ~real[:, 1:]).all()  # no gap before padding
    ids, _, empty = translate_predict.Translator(translate_train.build_translator(cfg)[0], cfg).source(
        tf.constant(["", "man  runs", " "])
    )
    assert ids.numpy().tolist()[0][0] == 1 and empty.numpy().tolist() == [True, False, True]
    assert (ids.numpy() != 0).sum(axis=1).min() == 1


def test_bfloat16_step_computes_in_bfloat16_and_learns_without_loss_scaling(cfg):
    """mixed_bfloat16 (for CPUs with bfloat16 instructions): bfloat16 compute, float32 weights, no loss scale."""
    import dataclasses

    import numpy as np

    mixed = dataclasses.replace(cfg, translate=dataclasses.replace(cfg.translate, mixed_precision="bfloat16"))
    model, optimizer = translate_train.build_translator(mixed)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    assert model.decoder_cell.compute_dtype == "bfloat16" and model.decoder_cell.variable_dtype == "float32"
    assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    step = translate_train.make_translate_step(model, optimizer, mixed.translate)
    examples = translate_batches.translation_examples(mixed, synthetic_pairs(40, seed=2))
    batch = next(translate_batches.translation_batches(examples, 8, seed=0))
    losses = [float(step(*batch)[0]) for _ in range(5)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(v.dtype == "float32" for v in model.trainable_variables)


def test_mixed_precision_step_scales_the_loss_and_skips_overflowing_updates(cfg):
    """mixed_float16: float16 compute, float32 weights; the custom step scales the loss itself, clips at the
    scaled norm, and an overflow skips the update and halves the scale (runs on CPU too, slowly)."""
    import dataclasses

    import numpy as np

    mixed = dataclasses.replace(cfg, translate=dataclasses.replace(cfg.translate, mixed_precision="float16"))
    model, optimizer = translate_train.build_translator(mixed)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    assert model.decoder_cell.compute_dtype == "float16" and model.decoder_cell.variable_dtype == "float32"
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    step = translate_train.make_translate_step(model, optimizer, mixed.translate)
    examples = translate_batches.translation_examples(mixed, synthetic_pairs(40, seed=2))
    batch = next(translate_batches.translation_batches(examples, 8, seed=0))
    losses = [float(step(*batch)[0]) for _ in range(5)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]

    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.dynamic_scale.assign(2.0**60)  # float16 gradients overflow at this scale
    step(*batch)
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**59
    assert all((a == v.numpy()).all() for a, v in zip(before, model.trainable_variables, strict=True))


@pytest.mark.slow
def test_bench_reports_every_measure(cfg, capsys):
    """`make bench` on the tiny synthetic setup: every number present and positive, the profile adds up."""
    import json
    from pathlib import Path

    from pipeline.translate import corpus as translate_corpus

    bench_stage.run(cfg)
    out = json.loads((Path(cfg.paths.reports) / "bench.json").read_text())
    t, n, p = out["translate"], out["ner"], out["translate_profile"]
    assert min(t["train_tokens_per_s"], t["greedy_sentences_per_s"], t["beam5_sentences_per_s"]) > 0
    assert t["train_tokens_per_s_files"] > 0 and t["files_over_memory"] > 0
    assert n["train_words_per_s"] > 0 and out["peak_rss_mb"] > 100 and out["machine"]["cores"] >= 1
    parts = p["ms_per_batch"]
    assert len(parts) == 5 and sum(list(parts.values())[1:]) == pytest.approx(p["step_ms"], abs=0.5)
    beam = out["beam_step_profile"]  # one beam step part by part: the parts that make the step, each timed
    assert {"decoder cell", "attention", "output projection", "log-softmax", "gather (reorder beam states)"} <= set(
        beam["ms"]
    )
    valid = len(translate_corpus.load_parallel(cfg, "valid"))
    assert min(beam["ms"].values()) > 0 and beam["step_ms"] > 0 and beam["rows"] == 5 * min(64, valid)
    printed = capsys.readouterr().out
    assert "beam-5 decoding, batch 64" in printed and "one beam step" in printed
