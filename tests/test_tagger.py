"""The tagger learns 20 sentences perfectly on a tiny config, and every recurrent layer can use cuDNN."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import InputError
from pipeline.core.optim import LazyAdam
from pipeline.ner import batches as ner_batches
from pipeline.ner import corpus as ner_corpus
from pipeline.ner import evaluate as ner_evaluate
from pipeline.ner import features as ner_features
from pipeline.ner import predict as ner_predict
from pipeline.ner import train as ner_train
from pipeline.ner.crf import viterbi_decode
from pipeline.ner.model import Tagger, TaggerNet, dummy_inputs
from tests.conftest import (
    TINY_NER,
    assert_best_weights_are_the_average,
    plain_inputs,
    synthetic,
    tiny_config,
    write_corpus,
)

BARE = "ner.lexicon=false"  # for models built here without a word-statistics file


@pytest.fixture(scope="module", params=[False, True], ids=["sentences", "doc_memory"])
def trained(tmp_path_factory, request):

    cfg = tiny_config(tmp_path_factory.mktemp("ner"), *TINY_NER, f"ner.doc_memory={str(request.param).lower()}")
    write_corpus(cfg, synthetic(20, seed=0), doc_size=5 if request.param else 0)
    ner_train.run(cfg)
    ner_evaluate.run(cfg)
    return cfg


def test_overfits_twenty_sentences(trained):
    metrics = json.loads((Path(trained.paths.reports) / "ner/metrics.json").read_text())
    assert metrics["test"]["f1"] == 1.0
    assert set(metrics["test"]["per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    history = json.loads((Path(trained.paths.reports) / "ner/history.json").read_text())
    assert history[-1]["dev_f1"] == 1.0 and history[-1]["loss"] < history[0]["loss"]
    assert (Path(trained.paths.models) / "ner/best.weights.h5").is_file()


def test_tags_raw_text(trained):

    tagger = ner_predict.load_tagger(trained)
    [item] = ner_predict.tag_sentences(tagger, trained, ["Angela Merkel visited Paris on Monday."])
    assert item["tokens"][-1] == "."
    assert [(e["text"], e["type"]) for e in item["entities"]] == [("Angela Merkel", "PER"), ("Paris", "LOC")]
    assert ner_predict.format_tagged(item) == "[PER Angela Merkel] visited [LOC Paris] on Monday ."
    texts = ["Angela Merkel visited Paris on Monday.", "Merkel lives in Paris ."]
    alone = ner_predict.tag_sentences(tagger, trained, texts)
    together = ner_predict.tag_sentences(tagger, trained, texts, document=True)
    assert [i["tokens"] for i in together] == [i["tokens"] for i in alone]
    if not trained.ner.doc_memory:  # without a memory, the sentences of a document do not meet
        assert together == alone


def test_a_document_is_tagged_the_same_alone_or_among_others(trained):

    tagger = ner_predict.load_tagger(trained)
    documents = ner_corpus.load_ner_documents(trained, "test")
    tokens = [w for d in documents for w, _ in d]
    together = ner_predict.predict_tags(tagger, tokens, ner_predict.document_ids(documents))
    first = [w for w, _ in documents[0]]
    assert ner_predict.predict_tags(tagger, first, [0] * len(first)) == together[: len(first)]


@pytest.mark.parametrize("settings", [(), ("ner.char_encoder=lstm", "ner.rnn=gru", "ner.layers=2")])
def test_recurrent_layers_are_cudnn_eligible(tmp_path, settings):

    cfg = tiny_config(tmp_path, *TINY_NER, BARE, *settings)
    model = Tagger(cfg.ner, np.zeros((10, 4), "float32"), n_chars=5, n_tags=3)
    model(dummy_inputs(cfg.ner.max_word_length))
    layers = model.recurrent_layers()
    assert len(layers) == 2 * cfg.ner.layers + (2 if cfg.ner.char_encoder == "lstm" else 0)
    for layer in layers:
        c = layer.get_config()
        assert c["activation"] == "tanh" and c["recurrent_activation"] == "sigmoid"
        assert c["recurrent_dropout"] == 0 and not c["unroll"] and c["use_bias"] and layer.use_cudnn == "auto"
        assert c.get("reset_after", True)  # GRU: cuDNN needs reset_after=True
    assert ner_features.CASES[0] == "<pad>"
    if cfg.ner.layers > 1 and cfg.ner.doc_memory:  # the second layer reads the first one's states and memory
        width = 2 * cfg.ner.units
        assert model.members[0].encoder[1].forward_layer.cell.kernel.shape[0] == width + width + 1


def test_ensemble_decodes_with_the_averaged_scores_and_trains_each_member_alone(tmp_path):
    import keras
    import tensorflow as tf

    cfg = tiny_config(tmp_path, *TINY_NER, BARE, "ner.ensemble=3", "ner.clip_norm=0.01", "ner.pretrained_dropout=0.5")
    model = Tagger(cfg.ner, np.random.default_rng(0).normal(size=(10, 4)).astype("float32"), n_chars=5, n_tags=3)
    model(dummy_inputs(cfg.ner.max_word_length))
    assert model.members[0].pretrained is model.members[2].pretrained  # one copy of the matrix, not one a member
    rng = np.random.default_rng(1)
    for member in model.members:  # distinct CRF scores, so averaging them is visible in the decoded paths
        for weight in (member.crf.transitions, member.crf.start, member.crf.end):
            weight.assign(rng.normal(0, 3, weight.shape).astype("float32"))
    inputs = plain_inputs([[2, 3, 4, 5, 6], [7, 8, 9, 0, 0]], cfg.ner.max_word_length)
    words = inputs["words"]
    outputs = [m(inputs).numpy() for m in model.members]
    assert not np.allclose(outputs[0], outputs[1])  # members start from different initialisations
    np.testing.assert_allclose(model(inputs).numpy(), np.mean(outputs, axis=0), rtol=1e-5, atol=1e-6)
    per_member = [m.crf.params() for m in model.members]
    params = [np.mean([p.numpy() for p in ps], axis=0) for ps in zip(*per_member, strict=True)]
    want = viterbi_decode(np.mean(outputs, axis=0), words != 0, *params)[0].numpy()
    np.testing.assert_array_equal(model.decode(inputs).numpy(), want)
    assert len(model.recurrent_layers()) == 3 * 2 * cfg.ner.layers

    # One step with a tiny clip norm: each member's own update is clipped to it, not the members' joint norm
    # (which would move each by about 0.01 / sqrt(3)). Repeated char ids make the sparse norms a little loose.
    step = ner_train.make_train_step(model, keras.optimizers.SGD(1.0), cfg.ner)
    before = [[v.numpy() for v in group] for group in model.variable_groups()]
    step(inputs, tf.constant([[1, 2, 0, 0, 1], [0, 1, 2, 0, 0]]))
    for group, old in zip(model.variable_groups(), before, strict=True):
        moved = np.sqrt(sum(np.sum((v.numpy() - o) ** 2) for v, o in zip(group, old, strict=True)))
        assert moved == pytest.approx(0.01, rel=0.05)


def test_pretrained_dropout_reads_the_pretrained_rows_in_training_only(tmp_path):

    matrix = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    cfg = tiny_config(tmp_path, *TINY_NER, BARE, "ner.pretrained_dropout=1.0", "ner.word_dropout=0")
    model = Tagger(cfg.ner, matrix, n_chars=5, n_tags=3)
    model(dummy_inputs(cfg.ner.max_word_length))
    inputs = plain_inputs([[2, 3, 4], [5, 6, 0]], cfg.ner.max_word_length)
    before = [model(inputs, training=b).numpy() for b in (True, False)]
    [member] = model.members
    member.word_emb.embeddings.assign(matrix + 1.0)  # what fine-tuning does to the trainable rows
    after = [model(inputs, training=b).numpy() for b in (True, False)]
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5)  # training: every word read its pretrained row
    assert not np.allclose(after[1], before[1])  # inference: the fine-tuned rows
    # The pretrained copy is a constant: no extra weight to save or export.
    plain = Tagger(tiny_config(tmp_path, *TINY_NER, BARE).ner, matrix, n_chars=5, n_tags=3)
    plain(dummy_inputs(cfg.ner.max_word_length))
    assert len(model.weights) == len(plain.weights)


def test_lazy_adam_matches_adam_on_the_rows_it_updates():
    import keras
    import tensorflow as tf

    def train(opt, ids):
        keras.utils.set_random_seed(0)
        emb = keras.layers.Embedding(5, 3)
        emb.build((None,))
        start = emb.embeddings.numpy().copy()
        opt.build([emb.embeddings])
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(emb(tf.constant(ids)) ** 2)
            [grad] = tape.gradient(loss, [emb.embeddings])
            assert isinstance(grad, tf.IndexedSlices)  # what the sparse path is for
            opt.apply_gradients([(grad, emb.embeddings)])
        return start, emb.embeddings.numpy()

    start, lazy = train(LazyAdam(0.1), [1, 3])
    _, dense = train(keras.optimizers.Adam(0.1), [1, 3])
    np.testing.assert_allclose(lazy[[1, 3]], dense[[1, 3]], atol=1e-6)
    np.testing.assert_array_equal(lazy[[0, 2, 4]], start[[0, 2, 4]])  # dense Adam would move nothing here either
    _, twice = train(LazyAdam(0.1), [1, 1])  # duplicate ids sum their gradients, as the dense gradient does
    assert np.isfinite(twice).all()


def test_document_memory_averages_the_other_mentions_in_the_same_document(tmp_path):
    import tensorflow as tf

    cfg = tiny_config(tmp_path, *TINY_NER, BARE, "ner.doc_memory=true")
    net = TaggerNet(cfg.ner, np.zeros((10, 4), "float32"), n_chars=5, n_tags=3, seed=1)
    h = tf.constant(np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32"))
    key = tf.constant([[7, 0, 9, 0], [7, 7, 0, 0], [9, 7, 0, 0]])
    doc = tf.constant([0, 0, 1])
    mem = net.memory(h, key, doc).numpy()
    assert mem.shape == (3, 4, 6)
    want = (h[1, 0] + h[1, 1]) / 2  # (0, 0)'s other mentions of key 7 in document 0; (2, 1) is in document 1
    np.testing.assert_allclose(mem[0, 0, :5], want, rtol=1e-6)
    np.testing.assert_allclose(mem[1, 1, :5], (h[0, 0] + h[1, 0]) / 2, rtol=1e-6)
    assert mem[0, 0, 5] == mem[1, 0, 5] == 1.0
    # Alone in its document (key 9 in documents 0 and 1; key 7 once in document 1), unkeyed or padding: nothing.
    for i, j in [(0, 2), (2, 0), (2, 1), (0, 1), (1, 2), (2, 3)]:
        assert not mem[i, j].any(), (i, j)


def test_memory_keys_match_capitalised_words_in_lowercase(tmp_path):
    import tensorflow as tf

    cfg = tiny_config(tmp_path, *TINY_NER)
    write_corpus(cfg, synthetic(5, seed=0))
    features = ner_features.NerFeatures(cfg)
    f = features(tf.constant([["Bolton", "BOLTON", "bolton", ",", ""], ["Wigan", "Bolton", "", "", ""]]))
    key = f["key"].numpy()
    assert key[0, 0] == key[0, 1] == key[1, 1] > 0 and key[1, 0] not in (0, key[0, 0])
    assert (key[0, 2:] == 0).all() and (key[1, 2:] == 0).all()
    assert f["doc"].numpy().tolist() == [0, 1]  # by default each sentence is its own document
    assert features(tf.constant([["a"], ["b"]]), tf.constant([3, 3]))["doc"].numpy().tolist() == [3, 3]


def test_document_batches_keep_documents_whole():

    documents = [[5] * n for n in (1, 7, 3, 12, 2, 2, 9)]
    plans = [ner_batches.document_batches(documents, 8, 2.0, np.random.default_rng(s)) for s in (0, 0, 1)]
    assert plans[0] == plans[1]
    assert sorted(i for batch in plans[0] for i in batch) == list(range(len(documents)))
    sizes = sorted(sum(len(documents[i]) for i in batch) for batch in plans[0])
    assert all(size >= 8 for size in sizes[1:])  # only the last batch of the order may fall short

    lengths = [[3, 1], [2], [4, 4, 1]]
    tokens = [["a"] * n for d in lengths for n in d]
    doc_ids = [d for d, lens in enumerate(lengths) for _ in lens]
    seen = []
    for idx, batch, doc in ner_batches.sorted_batches(tokens, doc_ids, batch_tokens=6):
        ids = [doc_ids[i] for i in idx]
        assert batch.shape == (len(idx), max(len(tokens[i]) for i in idx))
        pairs = list(zip(ids, doc.numpy().tolist(), strict=True))
        assert all((a == b) == (x == y) for a, x in pairs for b, y in pairs)  # local ids name the documents
        seen += list(idx)
    assert sorted(seen) == list(range(len(tokens)))


def test_a_tagger_distilled_from_a_teacher_learns_the_teachers_tags_without_gold(tmp_path):
    """ner.teacher with distill_weight 1: the student's training file says every word is O, so whatever it learns
    of the entities comes from the teacher's posteriors (dev and test keep their gold tags)."""
    sentences = synthetic(20, seed=0)
    teacher = tiny_config(tmp_path / "teacher", *TINY_NER, "ner.doc_memory=true")
    write_corpus(teacher, sentences, doc_size=5)
    ner_train.run(teacher)
    student = tiny_config(
        tmp_path / "student", *TINY_NER, "ner.doc_memory=false", f"ner.teacher={teacher.paths.models}",
        "ner.distill_weight=1.0", "ner.distill_temperature=1",
    )  # fmt: skip
    write_corpus(student, sentences, doc_size=5)
    train_file = Path(student.paths.processed) / "ner/train.conll"
    lines = train_file.read_text().splitlines()
    train_file.write_text("".join(line.rsplit("\t", 1)[0] + "\tO\n" if "\t" in line else line + "\n" for line in lines))
    ner_train.run(student)
    ner_evaluate.run(student)
    metrics = json.loads((Path(student.paths.reports) / "ner/metrics.json").read_text())
    assert metrics["test"]["f1"] == 1.0
    meta = json.loads((Path(student.paths.models) / "ner/tagger.json").read_text())
    assert meta["ner"]["teacher"] == teacher.paths.models and meta["ner"]["ensemble"] == 1


def test_a_missing_or_self_teacher_is_a_clear_error(tmp_path):
    cfg = tiny_config(tmp_path, *TINY_NER, f"ner.teacher={tmp_path / 'nowhere'}")
    write_corpus(cfg, synthetic(4, seed=0))
    with pytest.raises(InputError, match=r"nowhere/ner/tagger.json: no trained tagger"):
        ner_train.run(cfg)
    cfg = tiny_config(tmp_path, *TINY_NER, f"ner.teacher={cfg.paths.models}")
    with pytest.raises(InputError, match="that is paths.models"):
        ner_train.run(cfg)


def test_weight_average_follows_the_num_updates_rule_and_swaps_back():
    import keras

    from pipeline.core.averaging import WeightAverage

    w = keras.Variable(np.zeros(2, np.float32))
    average = WeightAverage([w], decay=0.5)
    expected = np.zeros(2)
    for t, value in enumerate([1.0, 2.0, 4.0], start=1):
        w.assign(np.full(2, value, np.float32))
        average.update()
        d = min(0.5, (1 + t) / (10 + t))  # 0.18, 0.25, 0.31: the warm-up rule, then the decay
        expected = d * expected + (1 - d) * value
    with average.swapped():
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(w.numpy(), [4.0, 4.0])  # the weights themselves again


@pytest.mark.slow
def test_an_averaged_tagger_is_scored_saved_and_checkpointed_as_its_average(tmp_path):
    """ner.average_decay: the history scores the average (and the weights beside it), best.weights.h5 holds the
    average, and the checkpoint carries it for a resumed run."""
    cfg = tiny_config(tmp_path, *TINY_NER, "ner.epochs=1", "ner.average_decay=0.9")
    write_corpus(cfg, synthetic(12, seed=1))
    ner_train.run(cfg)
    history = json.loads((Path(cfg.paths.reports) / "ner/history.json").read_text())
    assert set(history[0]) >= {"dev_f1", "dev_f1_unaveraged"}
    assert_best_weights_are_the_average(ner_train.build_tagger(cfg)[0], Path(cfg.paths.models) / "ner")
    ner_evaluate.run(cfg)  # scores what was saved: the average's dev F1
    metrics = json.loads((Path(cfg.paths.reports) / "ner/metrics.json").read_text())
    assert metrics["valid"]["f1"] == pytest.approx(history[0]["dev_f1"])
