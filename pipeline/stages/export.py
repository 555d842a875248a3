"""Stages `export` (every defined task), `export-ner`, `export-translate`: the trained tagger and translator as
string-in / string-out SavedModels for TF Serving.

    <paths.models>/ner/<N>/                      SavedModel; N = the next integer version, never overwritten
        saved_model.pb  variables/  assets/ner_words.txt ner_chars.txt
        assets.extra/tf_serving_warmup_requests  PredictionLog records TF Serving replays before it serves
        assets.extra/export.json                 settings the graph was traced with (TF Serving ignores it)
        assets.extra/expected_outputs.json       what this TensorFlow answered to the warm-up and hostile inputs,
                                                 for `make serving-check` on TF Serving's runtime
    <paths.models>/translate/<N>/                the same, with assets/src.txt tgt.txt
    <paths.models>/models.config                 TF Serving model_config_list naming every exported model
    <paths.models>/batching.config               --batching_parameters_file, from [export] batch_* (make bench-serving)
    <paths.models>/monitoring.config             --monitoring_config_file: Prometheus metrics on the REST port

Signatures (B = batch; every output is batch-leading, so TF Serving's REST row format works):

    ner        serving_default  text [B] string   -> tokens [B, n] string, tags [B, n] string ("" padded),
                                                     lengths [B] int32
               tag_tokens       tokens [B, n] string ("" = padding, right only) -> tags [B, n], lengths [B]
               tag_document     text [B] string, the sentences of one document -> as serving_default; with
                                                     ner.doc_memory its names read their other mentions there
    translate  serving_default  text [B] string   -> translation [B] string, score [B] float32
               translate_nbest  text [B] string   -> translation [B, K] string, score [B, K] float32,
                                                     K = translate.beam_width, best first

Everything happens in the graph: normalisation and tokenization (pipeline/core/text.py, the code training used),
vocabulary lookups (the vocab files are SavedModel assets), character and casing features, CRF Viterbi, beam
search, <unk> replacement and detokenization. Raw text is cut at text.max_length tokens, as in training;
`tag_tokens` cuts nothing, as `evaluate-ner`. Empty or whitespace-only text gives no tokens (NER) or "" with
score 0 (translation). An n-best entry that never finished (only when the output length limit is tiny) is "".

Stock TF Serving runs these graphs: core TF ops only (text.normalize NFC/NFKC would add a tensorflow-text op),
no py_function, and the recurrent layers are traced with use_cudnn=False, so a model trained on a GPU holds
no CudnnRNN op and loads on any CPU host. `run` checks the op types of every graph before it publishes it.
"""

import inspect
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.core import serving_configs
from pipeline.core import text as text_lib
from pipeline.core.config import TASKS, Config, tasks
from pipeline.core.files import write_text
from pipeline.core.serving import (
    HOSTILE_TEXTS,
    WARMUP_TEXTS,
    models_config,
    save_version,
    versions,
    warmup_record,
)
from pipeline.lm import export as lm_export
from pipeline.ner import export as ner_export
from pipeline.translate import export as translate_export
from pipeline.translate import predict as translate_predict


def serving_calls(name: str, cfg: Config) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(warm-up calls, every call the exporter records): one batch-1 and one full-batch request per signature,
    then the hostile texts one at a time on the text signatures."""
    texts = list(WARMUP_TEXTS)
    if name == "lm":
        inputs = lm_export.serving_inputs(texts)
    elif name == "ner":
        token_lists = text_lib.tokenize_batches(texts, cfg.text)
        width = max(map(len, token_lists))
        tokens = [t + [""] * (width - len(t)) for t in token_lists]
        inputs = {"serving_default": {"text": texts}, "tag_tokens": {"tokens": tokens}, "tag_document": {"text": texts}}
    else:
        inputs = {"serving_default": {"text": texts}, "translate_nbest": {"text": texts}}
    warmup = [
        (signature, {key: value[:size] for key, value in feeds.items()})
        for signature, feeds in inputs.items()
        for size in (1, len(texts))
    ]
    text_signatures = [s for s, feeds in inputs.items() if "text" in feeds]
    hostile = [(s, {"text": [t]}) for s in text_signatures for t in HOSTILE_TEXTS]
    if name == "lm":  # each hostile text as a prompt, at the recorded temperatures and lengths
        hostile = [("serving_default", lm_export.serving_inputs([t])["serving_default"]) for t in HOSTILE_TEXTS]
    return warmup, warmup + hostile


def warmup_requests(name: str, module, calls: list[tuple[str, dict]]) -> list[bytes]:
    """TF Serving's warm-up records of `calls`, each input in the dtype its signature declares."""
    out = []
    for signature, feeds in calls:
        fn = module.signatures()[signature]
        # The inputs' names are the traced function's parameter names (a TensorSpec may have no name of its own).
        names = inspect.signature(fn.python_function).parameters
        dtypes = {name: spec.dtype for name, spec in zip(names, fn.input_signature, strict=False)}
        arrays = {
            k: np.array(v, dtype=object if dtypes[k] == tf.string else dtypes[k].as_numpy_dtype)
            for k, v in feeds.items()
        }
        out.append(warmup_record(name, signature, arrays))
    return out


MODULES = {"ner": ner_export.ner_module, "translate": translate_export.translate_module, "lm": lm_export.lm_module}


def export(cfg: Config, names: tuple[str, ...]) -> None:
    """Export the named tasks' models as their next versions, then list every exported model in models.config."""
    # Load all first: a missing model (InputError with a hint) must not leave another newly exported.
    modules = {name: MODULES[name](cfg) for name in names}
    for name, module in modules.items():
        info = {"model": name, "signatures": sorted(module.signatures()), "text": cfg.section_dict("text")}
        if name == "translate":
            info["search"] = translate_predict.search_settings(module.translator.search_cfg)
        elif name == "ner":
            info["tags"] = module.tag_names
        else:
            info["lm"] = cfg.section_dict("lm")
        warmup, calls = serving_calls(name, cfg)
        where = save_version(module, Path(cfg.paths.models) / name, warmup_requests(name, module, warmup), info, calls)
        print(f"  {name}: {where} ({', '.join(sorted(module.signatures()))})")
    config_file = Path(cfg.paths.models) / "models.config"
    exported = tuple(name for name in TASKS if versions(Path(cfg.paths.models) / name))
    write_text(config_file, models_config(cfg, exported))
    write_text(Path(cfg.paths.models) / "batching.config", serving_configs.batching_config(cfg))
    write_text(Path(cfg.paths.models) / "monitoring.config", serving_configs.monitoring_config())
    print(f"  TF Serving config: {config_file} ({', '.join(exported)}; base paths under {cfg.export.serving_root})")
    if cfg.text.normalize in ("NFC", "NFKC"):
        print(f"  note: text.normalize = {cfg.text.normalize} puts tensorflow-text's NormalizeUTF8 op in the graphs;")
        print("  stock TF Serving lacks it: serve them with a build that links the tensorflow-text ops")


def run(cfg: Config) -> None:
    """Stage `export`: every task the config defines."""
    export(cfg, tasks(cfg))


def run_ner(cfg: Config) -> None:
    export(cfg, ("ner",))


def run_translate(cfg: Config) -> None:
    export(cfg, ("translate",))


def run_lm(cfg: Config) -> None:
    export(cfg, ("lm",))
