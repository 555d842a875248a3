"""Stage `export`: the trained tagger and translator as string-in / string-out SavedModels for TF Serving.

    <paths.models>/ner/<N>/                      SavedModel; N = the next integer version, never overwritten
        saved_model.pb  variables/  assets/ner_words.txt ner_chars.txt
        assets.extra/tf_serving_warmup_requests  PredictionLog records TF Serving replays before it serves
        assets.extra/export.json                 settings the graph was traced with (TF Serving ignores it)
    <paths.models>/translate/<N>/                the same, with assets/src.txt tgt.txt
    <paths.models>/models.config                 TF Serving model_config_list naming both models

Signatures (B = batch; every output is batch-leading, so TF Serving's REST row format works):

    ner        serving_default  text [B] string   -> tokens [B, n] string, tags [B, n] string ("" padded),
                                                     lengths [B] int32
               tag_tokens       tokens [B, n] string ("" = padding, right only) -> tags [B, n], lengths [B]
               tag_document     text [B] string, the sentences of one document -> as serving_default; with
                                                     ner.doc_memory its names read their other mentions there
    translate  serving_default  text [B] string   -> translation [B] string, score [B] float32
               translate_nbest  text [B] string   -> translation [B, K] string, score [B, K] float32,
                                                     K = translate.beam_width, best first

Everything happens in the graph: normalisation and tokenization (pipeline/text.py, the code training used),
vocabulary lookups (the vocab files are SavedModel assets), character and casing features, CRF Viterbi, beam
search, <unk> replacement and detokenization. Raw text is cut at text.max_length tokens, as in training;
`tag_tokens` cuts nothing, as `evaluate-ner`. Empty or whitespace-only text gives no tokens (NER) or "" with
score 0 (translation). An n-best entry that never finished (only when the output length limit is tiny) is "".

Stock TF Serving runs these graphs: core TF ops only (text.normalize NFC/NFKC would add a tensorflow-text op),
no py_function, and the recurrent layers are traced with use_cudnn=False, so a model trained on a GPU holds
no CudnnRNN op and loads on any CPU host. `run` checks the op types of every graph before it publishes it.
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from pipeline import decode as decode_lib
from pipeline import predict
from pipeline import text as text_lib
from pipeline.config import Config
from pipeline.files import write_text

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
# A few requests TF Serving replays at load time, so the first real request does not pay for graph set-up.
WARMUP_TEXTS = (
    "EU rejects German call to boycott British lamb.",
    "Peter Blackburn visited Paris on Monday.",
    "A man in a blue shirt is riding a bike down the street.",
    "",
)
PY_FUNCS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


# ------------------------------------------------------------------------------------------ serving modules


def _function(fn, spec: tf.TensorSpec):
    """A traced signature function. No autograph: nothing here branches on tensors, and autograph re-reads
    source files when tracing, so a file edited while a pipeline runs would be traced from the wrong lines."""
    return tf.function(fn, input_signature=[spec], autograph=False)


class NerServing(tf.Module):
    """The tagger with its feature tables: raw text or tokens in, tag strings out."""

    def __init__(self, tagger: predict.TrainedTagger, cfg: Config):
        super().__init__(name="ner")
        self.model, self.features, self.tag_names, self.text_cfg = tagger.model, tagger.features, tagger.tags, cfg.text
        self.serve = _function(self._serve, tf.TensorSpec([None], tf.string))
        self.tag_tokens = _function(self._tag, tf.TensorSpec([None, None], tf.string))
        self.tag_document = _function(self._serve_document, tf.TensorSpec([None], tf.string))

    def _tag(self, tokens: tf.Tensor, one_document: bool = False) -> dict[str, tf.Tensor]:
        """[B, n] tokens ("" padded) -> tags [B, n] ("" on padding) and lengths [B]; each row is its own
        document unless one_document."""
        b, n = tf.unstack(tf.shape(tokens))
        # The CRF scans over time and needs one step, and the char features of an empty batch lose the time
        # axis: give the model at least one row and one column of padding, and cut them off again.
        padded = tf.pad(tokens, [[0, tf.maximum(1 - b, 0)], [0, tf.maximum(1 - n, 0)]], constant_values="")
        rows = tf.shape(padded)[0]
        doc = tf.zeros([rows], tf.int32) if one_document else tf.range(rows, dtype=tf.int32)
        ids = self.model.decode(self.features(padded, doc))[:b, :n]
        tags = tf.where(tokens == "", "", tf.gather(tf.constant(self.tag_names), ids))
        return {"tags": tags, "lengths": tf.reduce_sum(tf.cast(tokens != "", tf.int32), axis=1)}

    def _serve(self, text):
        tokens = text_lib.tokenize(text, self.text_cfg, joiner=False).to_tensor("")
        return {"tokens": tokens, **self._tag(tokens)}

    def _serve_document(self, text):
        tokens = text_lib.tokenize(text, self.text_cfg, joiner=False).to_tensor("")
        return {"tokens": tokens, **self._tag(tokens, one_document=True)}

    def signatures(self) -> dict:
        return {"serving_default": self.serve, "tag_tokens": self.tag_tokens, "tag_document": self.tag_document}


class TranslateServing(tf.Module):
    """The translator (pipeline/predict.py, as `pipeline translate` runs it) plus an n-best beam search."""

    def __init__(self, translator: predict.Translator):
        super().__init__(name="translate")
        self.translator = translator
        self.serve = _function(self._serve, tf.TensorSpec([None], tf.string))
        self.nbest = _function(self._nbest, tf.TensorSpec([None], tf.string))

    def _serve(self, text):
        return self.translator(text)

    def _nbest(self, text):
        t, s = self.translator, self.translator.search_cfg
        src_ids, src_tokens, empty = t.source(text)
        k = s.beam_width
        hyps = decode_lib.beam_search(t.model, src_ids, k, s.length_penalty, s.max_length_a, s.max_length_b)
        batch, steps = tf.shape(hyps.ids)[0], tf.shape(hyps.ids)[2]
        # Detokenize all B * K hypotheses as one batch, each beside its own source tokens (for <unk> replacement).
        flat = t.target_text(
            tf.reshape(hyps.ids, [batch * k, steps]),
            tf.reshape(hyps.attention, [batch * k, steps]),
            tf.repeat(src_tokens, k, axis=0),
        )
        out = tf.reshape(flat, [batch, k])
        unfinished = tf.math.is_inf(hyps.scores)
        return {
            "translation": tf.where(empty[:, None] | unfinished, "", out),
            "score": tf.where(empty[:, None], 0.0, hyps.scores),
        }

    def signatures(self) -> dict:
        return {"serving_default": self.serve, "translate_nbest": self.nbest}


def ner_module(cfg: Config) -> NerServing:
    tagger = predict.load_tagger(cfg)
    for layer in tagger.model.recurrent_layers():
        layer.use_cudnn = False  # decided when traced: no CudnnRNN op, so the graph runs without a GPU
    return NerServing(tagger, cfg)


def translate_module(cfg: Config) -> TranslateServing:
    translator = predict.load_translator(cfg, use_cudnn=False)
    # predict.py's own tf.function would be saved as a third traced copy of the beam search, outside any signature.
    del translator.translate
    return TranslateServing(translator)


# ------------------------------------------------------------------------------------------ checks


def op_types(export_dir: str | Path) -> set[str]:
    """Every op type in a SavedModel: the graph's nodes and the nodes of every function in its library."""
    saved = saved_model_pb2.SavedModel.FromString((Path(export_dir) / "saved_model.pb").read_bytes())
    ops, functions = set(), set()
    for graph in saved.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for f in graph.graph_def.library.function:
            functions.add(f.signature.name)
            ops |= {node.op for node in f.node_def}
    return ops - functions  # a node may call a library function by name; that is no op of its own


def forbidden_ops(ops: set[str]) -> set[str]:
    """Ops that stop a graph loading in stock TF Serving on a CPU host: cuDNN kernels and Python callbacks."""
    return {op for op in ops if op.startswith("Cudnn") or op in PY_FUNCS}


# ------------------------------------------------------------------------------------------ TF Serving files


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2): a string, bytes or an embedded message."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def warmup_record(model: str, signature: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A serialized tensorflow.serving.PredictionLog holding one PredictRequest.

    Encoded by hand, so that no tensorflow-serving-api is needed; field numbers from tensorflow_serving/apis:
    PredictionLog.predict_log = 6; PredictLog.request = 1; PredictRequest.model_spec = 1, .inputs = 2
    (map<string, TensorProto>: entries with key = 1, value = 2); ModelSpec.name = 1, .signature_name = 3.
    """
    spec = _field(1, model.encode()) + _field(3, signature.encode())
    entries = b"".join(
        _field(2, _field(1, key.encode()) + _field(2, tf.make_tensor_proto(value).SerializeToString()))
        for key, value in inputs.items()
    )
    request = _field(1, spec) + entries
    return _field(6, _field(1, request))


def warmup_requests(name: str, cfg: Config) -> list[bytes]:
    """One batch-1 and one full-batch request per signature."""
    texts = np.array(WARMUP_TEXTS, dtype=object)
    if name == "ner":
        token_lists = text_lib.tokenize_batches(list(WARMUP_TEXTS), cfg.text)
        width = max(map(len, token_lists))
        tokens = np.array([t + [""] * (width - len(t)) for t in token_lists], dtype=object)
        inputs = {"serving_default": {"text": texts}, "tag_tokens": {"tokens": tokens}, "tag_document": {"text": texts}}
    else:
        inputs = {"serving_default": {"text": texts}, "translate_nbest": {"text": texts}}
    return [
        warmup_record(name, signature, {key: value[:size] for key, value in feeds.items()})
        for signature, feeds in inputs.items()
        for size in (1, len(texts))
    ]


def models_config(cfg: Config) -> str:
    """TF Serving's --model_config_file: both models, at the paths where the container sees them."""
    root = cfg.export.serving_root.rstrip("/")
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{root}/{name}"\n    model_platform: "tensorflow"\n  }}\n'
        for name in ("ner", "translate")
    )
    return f"model_config_list {{\n{entries}}}\n"


# ------------------------------------------------------------------------------------------ versions


def versions(base: Path) -> list[int]:
    """The integer version directories under a model directory (ckpt, logs, temp dirs are not versions)."""
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()) if base.is_dir() else []


def save_version(module: tf.Module, base: Path, warmup: list[bytes], info: dict) -> Path:
    """Save to a hidden temp dir beside the versions, check it, then rename it to the next version.

    TF Serving watches `base` and loads only integer directories, so it never sees a half-written export;
    rename refuses to replace a non-empty directory, so an existing version is never overwritten.
    """
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".export-{uuid.uuid4().hex[:8]}.tmp"
    try:
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        if bad := forbidden_ops(op_types(tmp)):
            raise RuntimeError(f"{base.name}: the exported graph holds {sorted(bad)}, which TF Serving cannot run")
        extra = tmp / "assets.extra"
        extra.mkdir()
        with tf.io.TFRecordWriter(str(tmp / WARMUP_FILE)) as writer:
            for record in warmup:
                writer.write(record)
        (extra / "export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        target = base / str(max(versions(base), default=0) + 1)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def run(cfg: Config) -> None:
    # Load both first: a missing model (InputError with a hint) must not leave the other newly exported.
    modules = {"ner": ner_module(cfg), "translate": translate_module(cfg)}
    search = predict.search_settings(modules["translate"].translator.search_cfg)
    for name, module in modules.items():
        info = {
            "model": name,
            "signatures": sorted(module.signatures()),
            "text": cfg.section_dict("text"),
            **({"search": search} if name == "translate" else {"tags": module.tag_names}),
        }
        where = save_version(module, Path(cfg.paths.models) / name, warmup_requests(name, cfg), info)
        print(f"  {name}: {where} ({', '.join(sorted(module.signatures()))})")
    config_file = Path(cfg.paths.models) / "models.config"
    write_text(config_file, models_config(cfg))
    print(f"  TF Serving config: {config_file} (base paths under {cfg.export.serving_root})")
    if cfg.text.normalize in ("NFC", "NFKC"):
        print(f"  note: text.normalize = {cfg.text.normalize} puts tensorflow-text's NormalizeUTF8 op in both graphs;")
        print("  stock TF Serving lacks it: serve them with a build that links the tensorflow-text ops")
