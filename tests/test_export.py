"""Export for TF Serving: numbered versions that are never overwritten, graphs of core ops only (no cuDNN, no Python),
warm-up records TF Serving can parse, outputs equal to the in-process predictors when reloaded by a process without
this project, Keras or tensorflow-text, and well-formed output for hostile input."""

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from pipeline.core import serving, serving_configs
from pipeline.ner import corpus as ner_corpus
from pipeline.ner import export as ner_export
from pipeline.ner import predict as ner_predict
from pipeline.stages import bench_serving
from pipeline.stages import export as export_stage
from pipeline.translate import corpus as translate_corpus
from pipeline.translate import export as translate_export
from pipeline.translate import predict as translate_predict
from tests.conftest import ROOT, TRAINED_SETTINGS, copy_run, needs_data, synthetic, synthetic_pairs

HOSTILE = [
    "",
    " \t \u200b  ",  # whitespace only, once normalised
    "Paris " * 10_000,  # cut at text.max_length tokens
    "🙂🎉 東京タワーへ行く。 שלום עולם! مرحبا بالعالم",
    "John Smith visited Paris on Monday.",
]
SIGNATURES = {
    "ner": {"serving_default", "tag_tokens", "tag_document"},
    "translate": {"serving_default", "translate_nbest"},
}


@pytest.fixture(scope="module")
def cfg(synthetic_run, tmp_path_factory):
    """A copy of the session's tiny trained models (conftest.TRAINED_SETTINGS), exported once."""
    cfg = copy_run(synthetic_run, tmp_path_factory.mktemp("export") / "run", *TRAINED_SETTINGS)
    export_stage.run(cfg)
    return cfg


def version_dir(cfg, name: str) -> Path:
    return Path(cfg.paths.models) / name / "1"


@pytest.fixture(scope="module")
def served(cfg):
    """The exported signatures, loaded back in this process (test_fresh_process_... loads them without pipeline)."""
    models = {name: tf.saved_model.load(str(version_dir(cfg, name))) for name in SIGNATURES}
    yield {name: model.signatures for name, model in models.items()}  # the models must outlive their signatures


def test_layout_signatures_and_models_config(cfg, served):
    for name, assets in (("ner", {"ner_words.txt", "ner_chars.txt"}), ("translate", {"src.txt", "tgt.txt"})):
        where = version_dir(cfg, name)
        assert serving.versions(where.parent) == [1]  # ckpt/ and logs/ beside it are not versions
        assert {p.name for p in (where / "assets").iterdir()} == assets
        assert (where / serving.WARMUP_FILE).is_file()
        assert set(served[name]) == SIGNATURES[name]
    text, tokens = tf.TensorSpec([None], tf.string, "text"), tf.TensorSpec([None, None], tf.string, "tokens")
    ner, translate = served["ner"], served["translate"]
    assert ner["serving_default"].structured_input_signature == ((), {"text": text})
    assert ner["tag_tokens"].structured_input_signature == ((), {"tokens": tokens})
    assert ner["tag_document"].structured_input_signature == ((), {"text": text})
    assert set(ner["serving_default"].structured_outputs) == {"tokens", "tags", "lengths"}
    assert set(ner["tag_document"].structured_outputs) == {"tokens", "tags", "lengths"}
    assert set(ner["tag_tokens"].structured_outputs) == {"tags", "lengths"}
    for signature in ("serving_default", "translate_nbest"):
        assert translate[signature].structured_input_signature == ((), {"text": text})
        assert set(translate[signature].structured_outputs) == {"translation", "score"}
    config = text_format.Parse(
        (Path(cfg.paths.models) / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    entries = [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]
    assert entries == [(name, f"/models/{name}", "tensorflow") for name in SIGNATURES]


def test_batching_and_monitoring_configs_parse_as_tf_serving_reads_them(cfg):
    read = lambda name: (Path(cfg.paths.models) / name).read_text()  # noqa: E731
    batching = serving_configs.parse("BatchingParameters", read("batching.config"))
    e = cfg.export
    assert (batching.max_batch_size.value, batching.batch_timeout_micros.value) == (64, e.batch_timeout_micros)
    assert batching.num_batch_threads.value == e.batch_threads and batching.max_enqueued_batches.value == 16
    assert not batching.pad_variable_length_inputs  # TF Serving would pad tag_tokens with a real token
    monitoring = serving_configs.parse("MonitoringConfig", read("monitoring.config"))
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path.startswith("/monitoring/")
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):  # a typo cannot reach the server
        serving_configs.parse("BatchingParameters", "max_batch_sise { value: 8 }")


def test_graphs_hold_core_ops_only(cfg):
    for name in SIGNATURES:
        ops = serving.op_types(version_dir(cfg, name))
        # Tokenization, vocabulary lookups from the asset files and the decoding loop are all in the graph.
        assert {"StaticRegexReplace", "StringSplitV2", "InitializeTableFromTextFileV2", "LookupTableFindV2"} <= ops
        assert ops & {"While", "StatelessWhile"}
        assert not any(op.startswith("Cudnn") or "PyFunc" in op for op in ops), sorted(ops)


def test_no_cudnn_op_even_when_exported_on_a_gpu_host(cfg, tmp_path, monkeypatch):
    """Keras traces the fused cuDNN kernel, which CPU hosts lack, when it sees a GPU: make it see one."""
    rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")  # the package also has a function `rnn`
    monkeypatch.setattr(rnn, "_is_gpu_available", lambda: True)
    modules = {
        "ner": ner_export.ner_module(cfg),
        "translate": translate_export.translate_module(cfg),
        "unguarded": ner_export.NerServing(ner_predict.load_tagger(cfg), cfg),  # use_cudnn left "auto", as in training
    }
    for name, module in modules.items():
        tf.saved_model.save(module, str(tmp_path / name), signatures=module.signatures())
    assert serving.forbidden_ops(serving.op_types(tmp_path / "unguarded")) == {"CudnnRNNV3"}  # the check has teeth
    assert not serving.forbidden_ops(serving.op_types(tmp_path / "ner") | serving.op_types(tmp_path / "translate"))


def test_op_check_finds_python_ops_inside_functions(tmp_path):
    module = tf.Module()
    module.f = tf.function(
        lambda text: tf.py_function(lambda t: t, [text], tf.string), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    assert serving.forbidden_ops(serving.op_types(tmp_path)) == {"EagerPyFunc"}
    assert serving.forbidden_ops({"CudnnRNNV3", "MatMul"}) == {"CudnnRNNV3"}
    # From tensorflow-text, only the normaliser and the SentencePiece ops pass; any other custom op is refused.
    allowed = {"NormalizeUTF8", "SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceDetokenizeOp"}
    assert serving.forbidden_ops(allowed | {"StaticRegexReplace", "WordpieceTokenizeWithOffsets"}) == {
        "WordpieceTokenizeWithOffsets"
    }


class Echo(tf.Module):
    def __init__(self):
        super().__init__()
        self.serve = tf.function(lambda text: {"text": text}, input_signature=[tf.TensorSpec([None], tf.string)])

    def signatures(self):
        return {"serving_default": self.serve}


def test_versions_count_up_and_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    base = tmp_path / "ner"
    for name in ("1", "3", "ckpt", "logs", ".export-old.tmp"):
        (base / name).mkdir(parents=True)
    (base / "3" / "saved_model.pb").write_text("version 3")
    assert serving.save_version(Echo(), base, [b"record"], {}) == base / "4"
    assert (base / "3" / "saved_model.pb").read_text() == "version 3"
    assert (base / "4" / "assets.extra" / "export.json").is_file()

    monkeypatch.setattr(serving, "forbidden_ops", lambda ops: {"CudnnRNNV3"})
    with pytest.raises(RuntimeError, match="CudnnRNNV3"):
        serving.save_version(Echo(), base, [], {})
    assert sorted(p.name for p in base.iterdir()) == [".export-old.tmp", "1", "3", "4", "ckpt", "logs"]


def test_warmup_records_are_prediction_logs_the_models_accept(cfg, served):
    for name in SIGNATURES:
        records = tf.data.TFRecordDataset(str(version_dir(cfg, name) / serving.WARMUP_FILE))
        seen = set()
        for record in records:
            request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
            assert request.model_spec.name == name
            seen.add(signature := request.model_spec.signature_name)
            feeds = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
            if "text" in feeds:
                assert [t.decode() for t in feeds["text"]] == list(serving.WARMUP_TEXTS[: len(feeds["text"])])
            out = served[name][signature](**{key: tf.constant(value) for key, value in feeds.items()})
            assert {v.shape[0] for v in out.values()} == {len(next(iter(feeds.values())))}
        assert seen == SIGNATURES[name]


def test_hostile_input_gives_well_formed_output(cfg, served):
    ner, translate = served["ner"], served["translate"]
    tags = set(json.loads((Path(cfg.paths.models) / "ner/tagger.json").read_text())["tags"])
    k, limit = cfg.translate.beam_width, cfg.text.max_length
    for batch in [[t] for t in HOSTILE] + [HOSTILE, ["", " "], []]:
        texts, b = tf.constant(batch, tf.string), len(batch)
        out = {key: v.numpy() for key, v in ner["serving_default"](text=texts).items()}
        real = out["tokens"] != b""
        assert out["tokens"].shape == out["tags"].shape == (b, max(out["lengths"], default=0))
        assert (real.sum(axis=1) == out["lengths"]).all() and (out["lengths"] <= limit).all()
        assert ((out["tags"] != b"") == real).all() and {t.decode() for t in out["tags"][real]} <= tags
        one, nbest = translate["serving_default"](text=texts), translate["translate_nbest"](text=texts)
        assert one["translation"].shape == one["score"].shape == (b,)
        assert nbest["translation"].shape == nbest["score"].shape == (b, k)

    out = ner["serving_default"](text=tf.constant(HOSTILE))
    assert list(out["lengths"].numpy()) == [0, 0, limit, 9, 7]
    assert [t.decode() for t in out["tokens"].numpy()[3][:3]] == ["🙂", "🎉", "東京タワーへ行く"]
    texts = tf.constant(HOSTILE)
    one, nbest = translate["serving_default"](text=texts), translate["translate_nbest"](text=texts)
    assert list(one["translation"].numpy()[:2]) == [b"", b""] and list(one["score"].numpy()[:2]) == [0, 0]
    assert (nbest["translation"].numpy()[:2] == b"").all() and (nbest["score"].numpy()[:2] == 0).all()
    assert np.isfinite(one["score"].numpy()).all()
    for tokens in ([["Paris", ""], ["", ""]], np.zeros([2, 0], object), np.zeros([0, 0], object)):
        tokens = tf.constant(tokens, tf.string)
        out = ner["tag_tokens"](tokens=tokens)
        assert out["tags"].shape == tokens.shape and out["lengths"].shape == tokens.shape[:1]


# The child: a serving host has neither this project nor Keras nor tensorflow-text, so they are made unimportable.
# (TensorFlow imports Keras itself when Keras is installed: checking sys.modules afterwards is not enough.)
CHILD = """
import json, sys
for name in ("pipeline", "keras", "tensorflow_text"):
    sys.modules[name] = None  # import fails
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

def plain(x):
    return [plain(v) for v in x] if isinstance(x, list) else x.decode() if isinstance(x, bytes) else x

jobs = json.load(sys.stdin)
for library in jobs["libraries"]:
    tf.load_op_library(library)
result = {}
for name, job in jobs["models"].items():
    model = tf.saved_model.load(job["path"])
    signatures = model.signatures
    outputs = {}
    for signature, feeds in job["calls"].items():
        out = signatures[signature](**{key: tf.constant(value, tf.string) for key, value in feeds.items()})
        outputs[signature] = {key: plain(value.numpy().tolist()) for key, value in out.items()}
    result[name] = {"outputs": outputs, "unregistered": [op for op in job["ops"] if op_def_registry.get(op) is None]}
blocked = ("pipeline", "keras", "tensorflow_text")
loaded = [m for m, module in sys.modules.items() if module and m.split(".")[0] in blocked]
print(json.dumps({"result": result, "loaded": loaded}))
"""


def text_op_libraries() -> list[str]:
    """tensorflow-text's compiled op libraries: what TF Serving links in, loadable without the Python package."""
    spec = importlib.util.find_spec("tensorflow_text")
    return sorted(str(p) for p in (Path(spec.origin).parent / "python/ops").glob("_*.so"))


def serve_in_fresh_process(cfg, calls: dict, workdir: Path, text_ops: bool = False) -> dict:
    """Run the exported signatures in a new Python that imports TensorFlow only, with the vocab dir moved away.
    `text_ops`: first load tensorflow-text's op libraries (a SentencePiece graph), as TF Serving has them linked."""
    jobs = {
        name: {"path": str(version_dir(cfg, name)), "ops": sorted(serving.op_types(version_dir(cfg, name))), "calls": c}
        for name, c in calls.items()
    }
    jobs = {"libraries": text_op_libraries() if text_ops else [], "models": jobs}
    vocab, hidden = Path(cfg.paths.vocab), workdir / "vocab.hidden"
    vocab.rename(hidden)  # the vocabularies must come from the SavedModel's assets
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            cwd=workdir,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=600,
        )
    finally:
        hidden.rename(vocab)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["loaded"] == []
    assert {name: r["unregistered"] for name, r in out["result"].items()} == {name: [] for name in calls}
    return {name: r["outputs"] for name, r in out["result"].items()}


def check_parity(cfg, ner_texts: list[str], sources: list[str], workdir: Path) -> None:
    """Exported signatures, run without this project, against predict.py's tagger and beam-search translator."""
    tagger, translator = ner_predict.load_tagger(cfg), translate_predict.load_translator(cfg)
    assert all(m.pretrained is None for m in tagger.model.members)  # training-only, not rebuilt to predict
    tokens = [item["tokens"] for item in ner_predict.tag_sentences(tagger, cfg, ner_texts)]
    want_tags = ner_predict.predict_tags(tagger, tokens)
    want_document = ner_predict.predict_tags(tagger, tokens, [0] * len(tokens))  # every sentence in one document
    want = translate_predict.translate_texts(translator, sources, batch_size=len(sources))  # one batch, as the child's
    want_scores = translator.translate(tf.constant(sources))["score"].numpy()
    width = max(map(len, tokens))
    calls = {
        "ner": {
            "serving_default": {"text": ner_texts},
            "tag_tokens": {"tokens": [t + [""] * (width - len(t)) for t in tokens]},
            "tag_document": {"text": ner_texts},
        },
        "translate": {"serving_default": {"text": sources}, "translate_nbest": {"text": sources}},
    }
    got = serve_in_fresh_process(cfg, calls, workdir)
    ner = got["ner"]["serving_default"]
    assert [row[:n] for row, n in zip(ner["tokens"], ner["lengths"], strict=True)] == tokens
    assert [row[:n] for row, n in zip(ner["tags"], ner["lengths"], strict=True)] == want_tags
    assert [row[: len(t)] for row, t in zip(got["ner"]["tag_tokens"]["tags"], tokens, strict=True)] == want_tags
    document = got["ner"]["tag_document"]
    assert [row[:n] for row, n in zip(document["tags"], document["lengths"], strict=True)] == want_document
    one, nbest = got["translate"]["serving_default"], got["translate"]["translate_nbest"]
    assert one["translation"] == want
    np.testing.assert_allclose(one["score"], want_scores, rtol=1e-4, atol=1e-5)
    assert [row[0] for row in nbest["translation"]] == want  # the n-best list starts with the 1-best
    np.testing.assert_allclose([row[0] for row in nbest["score"]], want_scores, rtol=1e-4, atol=1e-5)
    assert all(row == sorted(row, reverse=True) for row in nbest["score"])


def test_fresh_process_matches_in_process_predictors(cfg, tmp_path):
    ner_texts = [" ".join(words) for words, _ in synthetic(12, seed=5)] + HOSTILE[1:]
    sources = [s for s, _ in synthetic_pairs(12, seed=5)] + ["the dog jumps in the xylophone", "", "🙂 東京"]
    check_parity(cfg, ner_texts, sources, tmp_path)


def test_bench_serving_reports_latency_and_throughput(cfg, monkeypatch, capsys):

    monkeypatch.setattr(bench_serving, "REQUESTS", 5)
    monkeypatch.setattr(bench_serving, "BATCH", 8)
    monkeypatch.setattr(bench_serving, "BATCHES", 1)
    bench_serving.run(cfg)
    report = json.loads((Path(cfg.paths.reports) / "bench_serving.json").read_text())
    for name, unit in bench_serving.UNITS.items():
        assert report[name]["version"] == 1 and report[name]["requests"] == 5 and report[name]["batch"] == 8
        assert 0 < report[name]["latency_ms"]["p50"] <= report[name]["latency_ms"]["p95"]
        assert report[name][f"{unit}_per_s"] > 0
        assert set(report[name][f"{unit}_per_s_by_batch"]) == {"4", "8"}  # the sweep below BATCH, then BATCH
    assert report["translate"]["beam_width"] == cfg.translate.beam_width
    choice = report["batching_choice"]
    assert choice["max_batch_size"] in (4, 8) and choice["batch_timeout_micros"] > 0
    assert "tokens/s" in capsys.readouterr().out


@pytest.mark.slow
@needs_data
@pytest.mark.data
def test_real_corpora_export_matches_predictors(real_run, tmp_path):
    ner_texts = [" ".join(words) for words, _ in ner_corpus.load_ner(real_run, "test")[:200]]
    sources = [s for s, _ in translate_corpus.load_parallel(real_run, "test")[:200]]
    check_parity(real_run, ner_texts, sources, tmp_path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_fuzzed_unicode_never_crashes_a_signature(served, texts):
    """Arbitrary Unicode (surrogates excluded: a tf.string holds UTF-8) through all four signatures."""
    texts = [t.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for t in texts]
    batch = tf.constant(texts, tf.string)
    out = served["ner"]["serving_default"](text=batch)
    assert out["tokens"].shape[0] == len(texts) and out["tags"].shape == out["tokens"].shape
    one = served["translate"]["serving_default"](text=batch)
    nbest = served["translate"]["translate_nbest"](text=batch)
    assert one["translation"].shape == (len(texts),) and nbest["translation"].shape[0] == len(texts)
    for t in one["translation"].numpy():
        t.decode("utf-8")  # well-formed UTF-8
    tagged = served["ner"]["tag_tokens"](tokens=out["tokens"])
    assert (tagged["tags"].numpy() == out["tags"].numpy()).all()
    document = served["ner"]["tag_document"](text=batch)
    assert document["tags"].shape == out["tags"].shape and (document["lengths"] == out["lengths"]).numpy().all()


# ---- the TF Serving 2.20 runtime check (pipeline/stages/serving_check.py) ----


def _serving_check():
    return importlib.import_module("pipeline.stages.serving_check")


def test_export_records_what_it_answered_and_the_check_catches_a_difference(cfg, tmp_path):
    check = _serving_check()
    for name in SIGNATURES:
        expected = json.loads((version_dir(cfg, name) / serving.EXPECTED_FILE).read_text(encoding="utf-8"))
        assert expected["tensorflow"] == tf.__version__
        texts = [c["inputs"]["text"][0] for c in expected["calls"] if c["signature"] == "serving_default"]
        assert set(serving.HOSTILE_TEXTS) <= set(texts)
        problems, checked = check.check_version(version_dir(cfg, name))  # this runtime: everything equal
        assert problems == [] and checked["calls"] == len(expected["calls"]) and checked["warmup"] > 0
    copy = tmp_path / "translate/1"
    shutil.copytree(version_dir(cfg, "translate"), copy)
    expected = json.loads((copy / serving.EXPECTED_FILE).read_text(encoding="utf-8"))
    expected["calls"][0]["outputs"]["translation"][0] = "something else"
    expected["calls"][1]["outputs"]["score"][0] += 0.5
    (copy / serving.EXPECTED_FILE).write_text(json.dumps(expected), encoding="utf-8")
    problems, _ = check.check_version(copy)
    assert problems[0].startswith("translate v1 serving_default call 0 translation[0]: ")
    assert problems[1].startswith("translate v1 serving_default call 1 score[0]: ")
    assert len(problems) == 2


def run_serving_check(cfg, *extra: str, targets=(".venv-serving/.installed",), models: int = 2) -> list[str]:
    """Build what make builds for `make serving-check`, run the check on the tiny exports: its "ok" lines."""
    build = subprocess.run(["make", "--no-print-directory", *targets], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    check = str(ROOT / "pipeline/stages/serving_check.py")
    proc = subprocess.run(
        [str(ROOT / ".venv-serving/bin/python"), check, cfg.paths.models, *extra],
        capture_output=True,
        text=True,
        cwd=cfg.paths.models,  # no project code on the path, as in TF Serving
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert len(lines) == models and all("loads on TensorFlow 2.20." in line for line in lines), proc.stdout
    return lines


@pytest.mark.slow
@pytest.mark.skipif(bool(shutil.which("c++")), reason="the C++ loader test below runs this check first, then its own")
def test_tiny_exports_load_and_answer_alike_on_the_tensorflow_2_20_runtime(cfg):
    """What `make serving-check` runs: .venv-serving (TensorFlow 2.20, tensorflow-text 2.20, as TF Serving 2.20
    embeds them; built by make) loads the tiny exports with every op registered, replays the warm-up requests and
    answers every recorded call as TensorFlow 2.21 did."""
    run_serving_check(cfg)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("c++"), reason="no C++ compiler (`apt-get install g++`, as .ci/run does)")
def test_tiny_exports_answer_alike_through_the_cpp_savedmodel_loader(cfg):
    """tools/load_savedmodel.cc, TF Serving's loader with no Python, built against the 2.20 wheel: it restores only
    the variables the module lists (serving.backend_variables), and then answers as Python did."""
    loader = str(ROOT / "build/load_savedmodel")
    lines = run_serving_check(cfg, "--cpp", loader, targets=(".venv-serving/.installed", "build/load_savedmodel"))
    assert all("serving_default calls equal through the C++ loader" in line for line in lines), lines
