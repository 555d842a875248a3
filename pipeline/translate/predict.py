"""Load the trained translator and translate raw sentences (`pipeline translate`), entirely in TF ops.

<paths.models>/translate/translator.json    settings and embedding shapes the translator was trained with
<paths.models>/translate/best.weights.h5    the weights of the best dev-BLEU epoch
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.core import vocab
from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.translate import batches, subword
from pipeline.translate import decode as decode_lib
from pipeline.translate.config import Translate
from pipeline.translate.model import build


def translate_dir(cfg: Config) -> Path:
    return Path(cfg.paths.models) / "translate"


class Translator(tf.Module):
    """Raw sentences -> translations, entirely in TF ops (the exported serving graph is this module).

    normalise + tokenize (words or pieces, subword.py) -> src ids -> search (decode.py) -> target tokens ->
    <unk> replaced by the most attended source token (translate.replace_unk) -> detokenize.
    An empty or whitespace-only sentence translates to "" with score 0.
    """

    def __init__(self, model, cfg: Config, search: Translate | None = None):
        super().__init__(name="translator")
        self.model, self.text_cfg = model, cfg.text
        self.search_cfg = search or cfg.translate
        self.src_tokenizer, self.tgt_tokenizer = (subword.Tokenizer(cfg, side) for side in subword.SIDES)
        self.src_table = vocab.lookup_table(vocab.vocab_path(cfg, "src"))
        self.tgt_words = vocab.inverse_table(vocab.vocab_path(cfg, "tgt"))
        # No autograph: nothing branches on tensors, and autograph re-reads source files when it traces.
        self.translate = tf.function(self.__call__, input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)

    def source(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """[B] strings -> (src ids [B, S>=1], src tokens [B, S] "" padded, empty [B] bool)."""
        tokens = self.src_tokenizer.tokenize(texts)
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
        if self.search_cfg.replace_unk and self.tgt_tokenizer.pieces is None:  # pieces: byte fallback, no <unk>
            words = decode_lib.replace_unknowns(words, ids, attention, src_tokens)
        keep = (ids != vocab.PAD_ID) & (ids != vocab.EOS_ID)
        return self.tgt_tokenizer.detokenize(tf.ragged.boolean_mask(words, keep))

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
    for idx, batch in batches.sorted_text_batches(texts, batch_size):
        result = translator.translate(batch)["translation"].numpy()
        for k, t in zip(idx, result, strict=True):
            out[k] = t.decode("utf-8")
        if progress is not None:
            progress.update(len(idx))
    return out


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
    if meta.get("subword", {}) != subword.fingerprint(cfg):
        raise InputError(
            f"{where}: the model was trained on other tokens than {cfg.paths.vocab}/src.spm / tgt.spm (or on words)",
            hint="run `make train-translate` again",
        )
    shapes = (meta["src_shape"], meta["tgt_shape"])
    model = build(Translate(**meta["translate"]), *(np.zeros(shape, np.float32) for shape in shapes))
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
