"""STEXPORT_DOC"""

from pathlib import Path

import numpy as np

from pipeline.core import text as text_lib
from pipeline.core.config import Config
from pipeline.core.files import write_text
from pipeline.core.serving import WARMUP_TEXTS, models_config, save_version, warmup_record
from pipeline.ner import export as ner_export
from pipeline.translate import export as translate_export
from pipeline.translate import predict as translate_predict


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


def run(cfg: Config) -> None:
    # Load both first: a missing model (InputError with a hint) must not leave the other newly exported.
    modules = {"ner": ner_export.ner_module(cfg), "translate": translate_export.translate_module(cfg)}
    search = translate_predict.search_settings(modules["translate"].translator.search_cfg)
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
