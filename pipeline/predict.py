"""Load the trained tagger or translator and tag or translate raw sentences.

    <paths.models>/ner/tagger.json              hyper-parameters, sizes and tag set the weights were trained with
    <paths.models>/ner/best.weights.h5          the weights of the best dev-F1 epoch (Keras format)
    <paths.models>/translate/translator.json    settings and embedding shapes the translator was trained with
    <paths.models>/translate/best.weights.h5    the weights of the best dev-BLEU epoch

All are written by `pipeline.train` (run_ner, run_translate).
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline import datasets, lexicon, metrics, text, vocab
from pipeline import decode as decode_lib
from pipeline.config import Config, Ner, Translate
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
    for idx, batch, doc in datasets.sorted_batches(token_lists, documents):
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
    model = Tagger(
        dataclasses.replace(hp, pretrained_dropout=0.0),
        np.zeros((meta["n_words"], meta["word_dim"]), "float32"),
        meta["n_chars"],
        len(meta["tags"]),
        lexicon.for_tagger(cfg),
        meta["tags"],
    )
    model(dummy_inputs(hp.max_word_length))
    try:
        model.load_weights(where / "best.weights.h5")
    except ValueError as e:  # weights of another version of the tagger's layout
        raise InputError(
            f"{where / 'best.weights.h5'}: these weights do not fit this version's tagger: "
            + str(e).split("\n")[0].split(" Example")[0],
            hint="run `make train-ner` again",
        ) from None
    features = datasets.NerFeatures(cfg)
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


# ------------------------------------------------------------------------------------------ translation


def translate_dir(cfg: Config) -> Path:
    return Path(cfg.paths.models) / "translate"


class Translator(tf.Module):
    """Raw sentences -> translations, entirely in TF ops (the exported serving graph is this module).

    normalise + tokenize (pipeline/text.py) -> src ids -> search (pipeline/decode.py) -> target tokens ->
    <unk> replaced by the most attended source token (translate.replace_unk) -> detokenize.
    An empty or whitespace-only sentence translates to "" with score 0.
    """

    def __init__(self, model, cfg: Config, search: Translate | None = None):
        super().__init__(name="translator")
        self.model, self.text_cfg = model, cfg.text
        self.search_cfg = search or cfg.translate
        self.src_table = vocab.lookup_table(vocab.vocab_path(cfg, "src"))
        self.tgt_words = vocab.inverse_table(vocab.vocab_path(cfg, "tgt"))
        # No autograph: nothing branches on tensors, and autograph re-reads source files when it traces.
        self.translate = tf.function(self.__call__, input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)

    def source(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """[B] strings -> (src ids [B, S>=1], src tokens [B, S] "" padded, empty [B] bool)."""
        tokens = text.tokenize(texts, self.text_cfg, joiner=False)
        empty = tokens.row_lengths() == 0
        # The encoder needs one real token per row: empty rows get <unk>, and their output is blanked below.
        tokens = tokens.to_tensor("")
        tokens = tf.pad(tokens, [[0, 0], [0, tf.maximum(1 - tf.shape(tokens)[1], 0)]], constant_values="")
        ids = tf.cast(self.src_table.lookup(tokens), tf.int32)
        ids = tf.where(tokens == "", vocab.PAD_ID, ids)
        first = tf.where(empty, vocab.UNK_ID, ids[:, 0])
        return tf.concat([first[:, None], ids[:, 1:]], axis=1), tokens, empty

    def target_text(self, ids: tf.Tensor, attention: tf.Tensor, src_tokens: tf.Tensor) -> tf.Tensor:
        """[B, T] output ids (</s>, then padding) -> [B] detokenized strings."""
        words = self.tgt_words.lookup(tf.cast(ids, tf.int64))
        if self.search_cfg.replace_unk:
            words = decode_lib.replace_unknowns(words, ids, attention, src_tokens)
        keep = (ids != vocab.PAD_ID) & (ids != vocab.EOS_ID)
        return text.detokenize(tf.ragged.boolean_mask(words, keep))

    def __call__(self, text):
        src_ids, src_tokens, empty = self.source(text)
        hyps = decode_lib.search(self.model, src_ids, self.search_cfg)
        out = self.target_text(hyps.ids, hyps.attention, src_tokens)
        return {"translation": tf.where(empty, "", out), "score": tf.where(empty, 0.0, hyps.scores)}


def search_settings(search: Translate) -> dict:
    fields = ("beam_width", "length_penalty", "max_length_a", "max_length_b", "replace_unk")
    return {f: getattr(search, f) for f in fields}


def translate_texts(translator: Translator, texts: list[str], batch_size: int = 64, progress=None) -> list[str]:
    """Translate many sentences, batched by length; results in input order."""
    out = [""] * len(texts)
    for idx, batch in datasets.sorted_text_batches(texts, batch_size):
        result = translator.translate(batch)["translation"].numpy()
        for k, t in zip(idx, result, strict=True):
            out[k] = t.decode("utf-8")
        if progress is not None:
            progress.update(len(idx))
    return out


def build_translator_model(cfg: Config, meta: dict):
    """An untrained Seq2Seq with the shapes in translator.json; weights are loaded by the caller."""
    from pipeline.models.seq2seq import Seq2Seq

    hp = Translate(**meta["translate"])
    src, tgt = (np.zeros(shape, np.float32) for shape in (meta["src_shape"], meta["tgt_shape"]))
    return Seq2Seq(src, tgt, hp)


def load_translator(cfg: Config, search: Translate | None = None, use_cudnn="auto") -> Translator:
    """Rebuild the translator as it was trained (translator.json), with its best weights.

    `search` overrides the decoding settings (beam width, length penalty ...); the model's own come from
    training. Vocabularies must still have the sizes the weights were trained with.
    """
    where = translate_dir(cfg)
    try:
        meta = json.loads((where / "translator.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{where / 'translator.json'}: no trained translator", hint="run `make train-translate` first"
        ) from None
    sizes = [len(vocab.load_named(cfg, name)) for name in ("src", "tgt")]
    trained = [meta["src_shape"][0], meta["tgt_shape"][0]]
    if sizes != trained:
        raise InputError(
            f"{where}: the model was trained with vocabularies of {trained[0]} / {trained[1]} entries, but "
            f"{cfg.paths.vocab}/src.txt / tgt.txt have {sizes[0]} / {sizes[1]}",
            hint="run `make train-translate` again",
        )
    model = build_translator_model(cfg, meta)
    model.load_weights(where / "best.weights.h5")
    model.set_use_cudnn(use_cudnn)
    model_hp = Translate(**meta["translate"])
    search_cfg = dataclasses.replace(model_hp, **search_settings(search or cfg.translate))
    return Translator(model, cfg, search_cfg)


def translate_main(cfg: Config, sentences: list[str]) -> None:
    """`pipeline translate SENTENCE...`: print one translation a line."""
    translator = load_translator(cfg)
    for line in translate_texts(translator, sentences):
        print(line)
