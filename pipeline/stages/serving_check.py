"""`make serving-check`: the exported models, loaded by the TensorFlow runtime that TF Serving 2.20 embeds.

Run by the Python of `.venv-serving` (tensorflow-cpu 2.20, tensorflow-text 2.20, tensorflow-serving-api 2.20,
created by the make target), never by the project's: it imports no project code, as TF Serving has none. For
the latest `<models>/<name>/<N>/` of each model (the version TF Serving serves; --all: every version) it

  1. lists the graph's op types and fails on any this runtime does not register (with tensorflow-text's ops
     loaded, as the tensorflow/serving image links them),
  2. replays `assets.extra/tf_serving_warmup_requests` (TF Serving's own PredictionLog records) and
  3. reruns every call in `assets.extra/expected_outputs.json`, which the exporter wrote with the TensorFlow that
     trained the model (the warm-up inputs and hostile ones: empty, whitespace, 10,000 tokens, emoji, CJK, RTL),

and compares each output: strings and integers exactly, floats to 1e-4 relative. With --cpp it also reruns the
serving_default calls through tools/load_savedmodel.cc, TensorFlow's C++ SavedModel loader (TF Serving's).
Any difference, missing op or load failure is printed with its model, version, signature and output, and the
exit code is 1.

    python pipeline/stages/serving_check.py saved_models [--cpp build/load_savedmodel] [--json report.json]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # run as the check, not imported by a test: quieter TensorFlow logs
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402  (after the log level: TensorFlow reads it when it loads)
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401  (registers the tensorflow-text ops, as TF Serving's build links them)
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow.python.framework import op_def_registry  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

EXPECTED = "assets.extra/expected_outputs.json"
WARMUP = "assets.extra/tf_serving_warmup_requests"
RTOL, ATOL = 1e-4, 1e-5


def op_types(export_dir: Path) -> set[str]:
    # A copy of pipeline/core/serving.op_types: this file runs in .venv-serving, where no project code may be imported.
    saved = saved_model_pb2.SavedModel.FromString((export_dir / "saved_model.pb").read_bytes())
    ops, functions = set(), set()
    for graph in saved.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for f in graph.graph_def.library.function:
            functions.add(f.signature.name)
            ops |= {node.op for node in f.node_def}
    return ops - functions


def plain(value):
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def differences(where: str, got, want) -> list[str]:
    """Where `got` differs from `want` (nested lists of str / int / float), as readable lines."""
    got_a, want_a = np.array(got, dtype=object), np.array(want, dtype=object)
    if got_a.shape != want_a.shape:
        return [f"{where}: shape {got_a.shape}, expected {want_a.shape}"]
    out = []
    for index in np.ndindex(want_a.shape) if want_a.shape else [()]:
        g, w = got_a[index], want_a[index]
        same = np.isclose(g, w, rtol=RTOL, atol=ATOL) if isinstance(w, float) else g == w
        if not same:
            out.append(f"{where}{list(index)}: {g!r}, expected {w!r}")
    return out


def check_version(path: Path) -> tuple[list[str], dict]:
    """Problems found in one exported version, and what was checked."""
    name = f"{path.parent.name} v{path.name}"
    missing = sorted(op for op in op_types(path) if op_def_registry.get(op) is None)
    if missing:
        return [f"{name}: ops not registered in TensorFlow {tf.__version__}: {', '.join(missing)}"], {}
    try:
        model = tf.saved_model.load(str(path), tags=["serve"])
    except Exception as e:  # noqa: BLE001  (any load failure is the finding)
        return [f"{name}: does not load: {type(e).__name__}: {str(e).splitlines()[0]}"], {}
    problems, checked = [], {"warmup": 0, "calls": 0, "signatures": sorted(model.signatures)}
    for record in tf.data.TFRecordDataset(str(path / WARMUP)):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        signature = request.model_spec.signature_name or "serving_default"
        feeds = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        try:
            model.signatures[signature](**feeds)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name} {signature}: warm-up request fails: {type(e).__name__}: {str(e).splitlines()[0]}")
        checked["warmup"] += 1
    expected = json.loads((path / EXPECTED).read_text(encoding="utf-8")) if (path / EXPECTED).is_file() else None
    if expected is None:
        return problems + [f"{name}: no {EXPECTED}: export it again with this version of the pipeline"], checked
    for call in expected["calls"]:
        signature = call["signature"]
        fn = model.signatures[signature]
        dtypes = fn.structured_input_signature[1]  # each input as the signature declares it
        feeds = {k: tf.constant(v, dtypes[k].dtype) for k, v in call["inputs"].items()}
        out = fn(**feeds)
        for key, want in call["outputs"].items():
            problems += differences(
                f"{name} {signature} call {call['id']} {key}", plain(out[key].numpy().tolist()), want
            )
        checked["calls"] += 1
    return problems, checked


def text_op_libraries() -> list[str]:
    """tensorflow-text's compiled ops, which TF Serving's binary links in: the C++ loader loads them first."""
    return sorted(str(so) for so in (Path(tensorflow_text.__file__).parent / "python/ops").glob("_*.so"))


def check_cpp(path: Path, loader: Path) -> tuple[list[str], int]:
    """Every recorded serving_default call rerun through tools/load_savedmodel.cc: TensorFlow's C++ loader, the one
    TF Serving uses, with no Python in the process (it restores variables through the graph's saver, not the
    object graph Python's loader reads)."""
    name = f"{path.parent.name} v{path.name} (C++ loader)"
    expected = json.loads((path / EXPECTED).read_text(encoding="utf-8"))
    problems, runs = [], 0
    for call in (c for c in expected["calls"] if c["signature"] == "serving_default"):
        feeds = [f"{k}={v}" for k, vs in call["inputs"].items() for v in vs]
        proc = subprocess.run(
            [str(loader), *(f"--op_library={so}" for so in text_op_libraries()), str(path), "serving_default", *feeds],
            capture_output=True,
            text=True,
            env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        runs += 1
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["no output"]
            why = next((line for line in lines if "failed:" in line), lines[-1])
            problems.append(f"{name} serving_default call {call['id']}: {why}")
            continue
        for key, out in json.loads(proc.stdout).items():
            got = np.array(out["values"], dtype=object).reshape(out["shape"]).tolist()
            problems += differences(f"{name} serving_default call {call['id']} {key}", got, call["outputs"][key])
    return problems, runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="paths.models: <models>/<name>/<N>/ are checked")
    parser.add_argument("--json", type=Path, help="also write the findings here")
    parser.add_argument(
        "--all", action="store_true", help="every version, not only the latest (what TF Serving serves)"
    )
    parser.add_argument(
        "--cpp", type=Path, help="the built tools/load_savedmodel.cc: also rerun through the C++ loader"
    )
    args = parser.parse_args(argv)
    versions = []
    for base in sorted(p for p in args.models.iterdir() if p.is_dir()) if args.models.is_dir() else []:
        numbered = sorted(
            (p for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
            key=lambda p: int(p.name),
        )
        versions += numbered if args.all else numbered[-1:]
    if not versions:
        print(f"error: no exported version under {args.models}", file=sys.stderr)
        return 2
    runtime = f"TensorFlow {tf.__version__} + tensorflow-text {tensorflow_text.__version__}"
    report, failed = {"runtime": runtime, "versions": {}}, False
    for path in versions:
        problems, checked = check_version(path)
        if args.cpp and not problems:
            cpp_problems, checked["cpp_calls"] = check_cpp(path, args.cpp)
            problems += cpp_problems
        report["versions"][f"{path.parent.name}/{path.name}"] = {"problems": problems, **checked}
        if problems:
            failed = True
            print(f"FAIL  {path}: {len(problems)} problem(s) on {runtime}")
            for line in problems[:20]:
                print(f"      {line}")
        else:
            print(
                f"ok    {path}: loads on {runtime}; {checked['warmup']} warm-up requests replayed, "
                f"{checked['calls']} calls equal to the exporter's ({', '.join(checked['signatures'])})"
                + (f"; {checked['cpp_calls']} serving_default calls equal through the C++ loader" if args.cpp else "")
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
