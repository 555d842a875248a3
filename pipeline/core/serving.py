"""What every exported model shares: the next numbered version directory (written hidden, checked, renamed),
the op check that keeps cuDNN kernels, Python callbacks and unlisted custom ops out, TF Serving's warm-up records
and models.config (through tensorflow-serving-api's protos).
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from pipeline.core.config import Config

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


EXPECTED_FILE = "assets.extra/expected_outputs.json"  # what the exporter's TensorFlow answered (serving_check.py)

# A few requests TF Serving replays at load time, so the first real request does not pay for graph set-up.
WARMUP_TEXTS = (
    "EU rejects German call to boycott British lamb.",
    "Peter Blackburn visited Paris on Monday.",
    "A man in a blue shirt is riding a bike down the street.",
    "",
)
# What a server meets sooner or later; the serving check reruns them on TF Serving's runtime.
HOSTILE_TEXTS = (
    "",
    " \t \u3000 ",
    " ".join(["word"] * 10_000),
    "Emoji 😀🚀 and ZWJ 👩‍👩‍👧 here.",
    "東京タワーは高い。北京欢迎你",
    "مرحبا بالعالم — שלום עולם",
    "\u202eRTL override\u202c and \u200bzero width",
)


PY_FUNCS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
# The tensorflow-text ops a graph may hold, all linked into tensorflow/serving (checked on its runtime by
# serving_check.py): Unicode normalisation (text.normalize = NFC/NFKC) and SentencePiece (translate/subword.py).
TEXT_OPS = {"NormalizeUTF8", "SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceDetokenizeOp"}


def _function(fn, spec: tf.TensorSpec):
    """A traced signature function. No autograph: nothing here branches on tensors, and autograph re-reads
    source files when tracing, so a file edited while a pipeline runs would be traced from the wrong lines."""
    return tf.function(fn, input_signature=[spec], autograph=False)


def backend_variables(model) -> list[tf.Variable]:
    """The tf.Variables under a Keras 3 model's weights. A tf.Module holding a Keras 3 model does not track them
    for the SavedModel's restore op, so TF Serving's C++ loader (LoadSavedModel, `serve` tag) would run the graph
    with no variable restored: "Could not find variable ..." (tensorflow/serving#2250, keras#20096). Python's
    loader hides this: it restores through the object graph. A module that lists them is restored by both."""
    return [w.value if hasattr(w, "value") else w for w in model.weights]


def op_types(export_dir: str | Path) -> set[str]:
    """Every op type in a SavedModel: the graph's nodes and the nodes of every function in its library.
    (pipeline/stages/serving_check.py keeps a copy: it runs on TF Serving's runtime without project code.)"""
    saved = saved_model_pb2.SavedModel.FromString((Path(export_dir) / "saved_model.pb").read_bytes())
    ops, functions = set(), set()
    for graph in saved.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for f in graph.graph_def.library.function:
            functions.add(f.signature.name)
            ops |= {node.op for node in f.node_def}
    return ops - functions  # a node may call a library function by name; that is no op of its own


def forbidden_ops(ops: set[str]) -> set[str]:
    """Ops that stop a graph loading in TF Serving on a CPU host: cuDNN kernels, Python callbacks, and any op from
    outside core TensorFlow (`tf.raw_ops`) other than the tensorflow-text ops our tokenizers need (TEXT_OPS)."""
    return {
        op
        for op in ops
        if op.startswith("Cudnn") or op in PY_FUNCS or (not hasattr(tf.raw_ops, op) and op not in TEXT_OPS)
    }


def warmup_record(model: str, signature: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A serialized tensorflow.serving.PredictionLog holding one PredictRequest (TF Serving's warm-up format)."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def models_config(cfg: Config, names: tuple[str, ...]) -> str:
    """TF Serving's --model_config_file (text ModelServerConfig): each model at the path the container sees."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    root = cfg.export.serving_root.rstrip("/")
    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        config.model_config_list.config.add(name=name, base_path=f"{root}/{name}", model_platform="tensorflow")
    return text_format.MessageToString(config)


def versions(base: Path) -> list[int]:
    """The integer version directories under a model directory (ckpt, logs, temp dirs are not versions)."""
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()) if base.is_dir() else []


def expected_outputs(export_dir: Path, calls: list[tuple[str, dict]]) -> dict:
    """Each (signature, string inputs) call run on the saved graph, reloaded as a server would load it."""
    model = tf.saved_model.load(str(export_dir))

    def plain(v):
        return [plain(x) for x in v] if isinstance(v, list) else v.decode() if isinstance(v, bytes) else v

    out = []
    for i, (signature, feeds) in enumerate(calls):
        fn = model.signatures[signature]
        dtypes = fn.structured_input_signature[1]  # each input as its signature declares it (string, int, float)
        result = fn(**{k: tf.constant(v, dtypes[k].dtype) for k, v in feeds.items()})
        outputs = {k: plain(v.numpy().tolist()) for k, v in result.items()}
        out.append({"id": i, "signature": signature, "inputs": plain(feeds), "outputs": outputs})
    return {"tensorflow": tf.__version__, "calls": out}


def save_version(module: tf.Module, base: Path, warmup: list[bytes], info: dict, calls=()) -> Path:
    """Save to a hidden temp dir beside the versions, check it, record what it answers to `calls`, then rename
    it to the next version.

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
        if calls:
            expected = json.dumps(expected_outputs(tmp, list(calls)), ensure_ascii=False)
            (tmp / EXPECTED_FILE).write_text(expected + "\n", encoding="utf-8")
        target = base / str(max(versions(base), default=0) + 1)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
