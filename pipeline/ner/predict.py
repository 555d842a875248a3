"""Load the trained tagger and tag raw sentences (`pipeline tag`).

<paths.models>/ner/tagger.json              hyper-parameters, sizes and tag set the weights were trained with
<paths.models>/ner/best.weights.h5          the weights of the best dev-F1 epoch (Keras format)
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.core import text, vocab
from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.ner import batches, lexicon, metrics
from pipeline.ner.config import Ner
from pipeline.ner.features import NerFeatures
from pipeline.ner.model import Tagger, build


def ner_dir(cfg: Config) -> Path:
    return Path(cfg.paths.models) / "ner"


@dataclass
class TrainedTagger:
    model: Tagger
    features: NerFeatures
    tags: list[str]
    decode: object  # tf.function: [batch, time] token strings ("" = padding) -> [batch, time] tag ids


def make_decoder(model: Tagger, features: NerFeatures):
    """One traced function for any batch and length: tokens -> features -> Viterbi (or argmax) tag ids."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None], tf.int32)], autograph=False
    )
    def decode(tokens, doc):
        return model.decode(features(tokens, doc))

    return decode


def predict_tags(
    tagger: TrainedTagger, token_lists: list[list[str]], doc_ids: list[int] | None = None
) -> list[list[str]]:
    """One tag per token for every sentence; nothing is truncated. With doc_ids (the document of each sentence)
    and a tagger with a document memory, whole documents share a batch; otherwise each sentence stands alone."""
    out: list[list[str]] = [[] for _ in token_lists]
    documents = doc_ids if tagger.model.hp.doc_memory else None
    for idx, batch, doc in batches.sorted_batches(token_lists, documents):
        ids = tagger.decode(batch, doc).numpy()
        for row, k in zip(ids, idx, strict=True):
            out[k] = [tagger.tags[i] for i in row[: len(token_lists[k])]]
    return out


def document_ids(documents: list[list]) -> list[int]:
    """The document index of each sentence of documents laid end to end."""
    return [d for d, doc in enumerate(documents) for _ in doc]


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
    trained = {"ner_words": meta["n_words"], "ner_chars": meta["n_chars"]}
    if sizes != trained:
        raise InputError(
            f"{where}: the tagger was trained with vocabularies of {trained['ner_words']} words / "
            f"{trained['ner_chars']} characters, but {cfg.paths.vocab}/ner_words.txt / ner_chars.txt have "
            f"{sizes['ner_words']} / {sizes['ner_chars']}",
            hint="run `make train-ner` again",
        )
    # Without the training-only pretrained copy: it would be a constant of zeros here, one per member.
    shape = (meta["n_words"], meta["word_dim"])
    model = build(
        dataclasses.replace(hp, pretrained_dropout=0.0),
        np.zeros(shape, "float32"),
        meta["n_chars"],
        meta["tags"],
        lexicon.for_tagger(cfg),
    )
    try:
        model.load_weights(where / "best.weights.h5")
    except ValueError as e:  # weights of another version of the tagger's layout
        raise InputError(
            f"{where / 'best.weights.h5'}: these weights do not fit this version's tagger: "
            + str(e).split("\n")[0].split(" Example")[0],
            hint="run `make train-ner` again",
        ) from None
    features = NerFeatures(cfg)
    return TrainedTagger(model, features, meta["tags"], make_decoder(model, features))


def tag_sentences(tagger: TrainedTagger, cfg: Config, sentences: list[str], document: bool = False) -> list[dict]:
    """Raw sentences -> [{"tokens": [...], "entities": [{"text", "type", "start", "end"}]}] (token offsets).

    Tokenized by the one tokenizer (text.tokenize), so longer input is cut at text.max_length tokens. With
    document, the sentences are tagged as one document (see predict_tags); otherwise each alone.
    """
    token_lists = text.tokenize_batches(sentences, cfg.text, joiner=False) if sentences else []
    tagged = predict_tags(tagger, token_lists, [0] * len(token_lists) if document else None)
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


def tag_main(cfg: Config, sentences: list[str], document: bool = False) -> None:
    """`pipeline tag [--document] SENTENCE...`: print each sentence with its entities, then `TYPE<TAB>text` lines."""
    tagger = load_tagger(cfg)
    for item in tag_sentences(tagger, cfg, sentences, document):
        print(format_tagged(item))
        for e in item["entities"]:
            print(f"  {e['type']}\t{e['text']}")
