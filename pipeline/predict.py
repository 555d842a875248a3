"""Load the trained tagger and tag tokens or raw sentences.

    <paths.models>/ner/tagger.json        hyper-parameters, sizes and tag set the weights were trained with
    <paths.models>/ner/best.weights.h5    the weights of the best dev-F1 epoch (Keras format)

Both are written by `pipeline.train.run_ner`.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline import datasets, metrics, text, vocab
from pipeline.config import Config, Ner
from pipeline.errors import InputError
from pipeline.models.tagger import Tagger, dummy_inputs


def ner_dir(cfg: Config) -> Path:
    return Path(cfg.paths.models) / "ner"


@dataclass
class TrainedTagger:
    model: Tagger
    features: datasets.NerFeatures
    tags: list[str]
    decode: object  # tf.function: [batch, time] token strings ("" = padding) -> [batch, time] tag ids


def make_decoder(model: Tagger, features: datasets.NerFeatures):
    """One traced function for any batch and length: tokens -> features -> Viterbi (or argmax) tag ids."""

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string)], autograph=False)
    def decode(tokens):
        return model.decode(features(tokens))

    return decode


def predict_tags(tagger: TrainedTagger, token_lists: list[list[str]]) -> list[list[str]]:
    """One tag per token for every sentence; nothing is truncated (sentences are decoded sorted by length)."""
    out: list[list[str]] = [[] for _ in token_lists]
    for idx, batch in datasets.sorted_batches(token_lists):
        ids = tagger.decode(batch).numpy()
        for row, k in zip(ids, idx, strict=True):
            out[k] = [tagger.tags[i] for i in row[: len(token_lists[k])]]
    return out


def load_tagger(cfg: Config) -> TrainedTagger:
    """Rebuild the tagger as it was trained (tagger.json) and load its best weights."""
    where = ner_dir(cfg)
    try:
        meta = json.loads((where / "tagger.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{where / 'tagger.json'}: no trained tagger", hint="run `make train-ner` first") from None
    hp = Ner(**meta["ner"])
    cfg = dataclasses.replace(cfg, ner=hp)
    sizes = {name: len(vocab.load_named(cfg, name)) for name in ("ner_words", "ner_chars")}
    if sizes != {"ner_words": meta["n_words"], "ner_chars": meta["n_chars"]}:
        raise InputError(f"{where}: the vocabularies changed since training", hint="run `make train-ner` again")
    model = Tagger(hp, np.zeros((meta["n_words"], meta["word_dim"]), "float32"), meta["n_chars"], len(meta["tags"]))
    model(dummy_inputs(hp.max_word_length))
    model.load_weights(where / "best.weights.h5")
    features = datasets.NerFeatures(cfg)
    return TrainedTagger(model, features, meta["tags"], make_decoder(model, features))


def tag_sentences(tagger: TrainedTagger, cfg: Config, sentences: list[str]) -> list[dict]:
    """Raw sentences -> [{"tokens": [...], "entities": [{"text", "type", "start", "end"}]}] (token offsets).

    Tokenized by the one tokenizer (text.tokenize), so longer input is cut at text.max_length tokens.
    """
    token_lists = text.tokenize_batches(sentences, cfg.text, joiner=False) if sentences else []
    tagged = predict_tags(tagger, token_lists)
    out = []
    for tokens, tags in zip(token_lists, tagged, strict=True):
        ents = [
            {"text": " ".join(tokens[a:b]), "type": kind, "start": a, "end": b} for kind, a, b in metrics.spans(tags)
        ]
        out.append({"tokens": tokens, "entities": ents})
    return out


def format_tagged(item: dict) -> str:
    """`[ORG EU] rejects [MISC German] call ...`: the sentence with each entity bracketed and typed."""
    words = list(item["tokens"])
    for e in reversed(item["entities"]):
        words[e["start"] : e["end"]] = [f"[{e['type']} {e['text']}]"]
    return " ".join(words)


def tag_main(cfg: Config, sentences: list[str]) -> None:
    """`pipeline tag SENTENCE...`: print each sentence with its entities, then one `TYPE<TAB>text` line each."""
    tagger = load_tagger(cfg)
    for item in tag_sentences(tagger, cfg, sentences):
        print(format_tagged(item))
        for e in item["entities"]:
            print(f"  {e['type']}\t{e['text']}")
