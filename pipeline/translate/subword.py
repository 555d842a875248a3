"""The translator's tokenizers: words (pipeline/core/text.py) or SentencePiece subwords, as TF ops.

With `translate.data.tokenizer = "sentencepiece"` the vocab stage trains a SentencePiece model on the normalised
training text (the `sentencepiece` package), and tf.data, evaluation and the exported graph all cut text with that
same serialized model through tensorflow-text's SentencePiece ops. Pieces are looked up in the vocabulary files like
words, so everything after the tokenizer is shared by both.

    <paths.vocab>/src.spm, tgt.spm       the serialized models (the same bytes when translate.data.subword_joint)
    <paths.vocab>/spm.<key>.model        the trained model, keyed on its settings and text: a rerun reuses it
    <paths.vocab>/src.txt, tgt.txt       the pieces in id order: 0 <pad>, 1 <unk>, 2 <s>, 3 </s>, 256 bytes, ...

Training sees text already normalised by `text.normalize` (and U+2581, SentencePiece's space marker, and the
whitespace RE2 misses read as spaces: AS_SPACE), and SentencePiece's own normalisation is off, so
`detokenize(tokenize(x)) == normalize(x)`; byte fallback spells a character outside the model as UTF-8 bytes, so no
input falls into `<unk>`. Sentences are cut at translate.data.subword_max_length pieces (text.max_length counts
words).
"""

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import tensorflow as tf

from pipeline.core import text, vocab
from pipeline.core.config import Config, tasks
from pipeline.core.errors import InputError
from pipeline.core.files import write_bytes

SIDES = ("src", "tgt")


def enabled(cfg: Config) -> bool:
    return "translate" in tasks(cfg) and cfg.translate_data.tokenizer == "sentencepiece"


def model_path(cfg: Config, side: str) -> Path:
    return Path(cfg.paths.vocab) / f"{side}.spm"


def settings(cfg: Config) -> dict:
    """Every SentencePiece trainer flag we set (the model's ids must match core/vocab.py's)."""
    d = cfg.translate_data
    return {
        "model_type": d.subword_type,
        "vocab_size": d.subword_size,
        "character_coverage": d.subword_coverage,
        "byte_fallback": True,
        "normalization_rule_name": "identity",  # text.normalize has run; any other rule breaks the round trip
        "hard_vocab_limit": False,  # a corpus too small for vocab_size gets fewer pieces, not an error
        "max_sentence_length": 1 << 16,  # bytes; longer lines are skipped by the trainer, and text.max_length cuts
        "pad_id": vocab.PAD_ID,
        "unk_id": vocab.UNK_ID,
        "bos_id": vocab.BOS_ID,
        "eos_id": vocab.EOS_ID,
        "pad_piece": vocab.PAD,
        "unk_piece": vocab.UNK,
        "bos_piece": vocab.BOS,
        "eos_piece": vocab.EOS,
        "num_threads": 1,  # one thread, with the seeded sampler: the same model on every run
        "seed": cfg.embed.seed,
    }


# SentencePiece's space marker U+2581 could not come back from detokenize; the others are whitespace to Python, so a
# piece holding one would be rejected by the vocabulary file, but RE2's \s misses them (text.normalize = "none").
AS_SPACE = "[\u2581\x0b\x1c-\x1f\x85]"


def normalize(texts, cfg) -> tf.Tensor:
    """text.normalize, with the characters of AS_SPACE read as spaces first."""
    return text.normalize(tf.strings.regex_replace(tf.convert_to_tensor(texts, tf.string), AS_SPACE, " "), cfg.text)


def normalized(texts: list[str], cfg: Config, batch: int = 8192) -> list[str]:
    out = []
    for i in range(0, len(texts), batch):
        out += [t.decode("utf-8") for t in normalize(tf.constant(texts[i : i + batch]), cfg).numpy()]
    return out


def training_text(cfg: Config, sides: tuple[str, ...]) -> Callable[[], Iterator[str]]:
    """A fresh stream of the normalised training sentences of `sides` on each call (all of one side, then the
    other's), read from the processed shards."""
    from pipeline.translate import corpus

    def sentences():
        for side in sides:
            column = SIDES.index(side)
            for batch in corpus.iter_batches(cfg, "train"):
                yield from normalized([pair[column] for pair in batch], cfg)

    return sentences


def _key(s: dict, cfg: Config, sentences: Iterable[str]) -> tuple[str, int]:
    """The cache key of a model (settings and text) and the number of sentences, in one pass."""
    h, n = hashlib.sha256(json.dumps([s, cfg.section_dict("text")], sort_keys=True).encode()), 0
    for sentence in sentences:
        h.update(sentence.encode("utf-8") + b"\n")
        n += 1
    return h.hexdigest()[:16], n


def train_model(cfg: Config, sentences: Callable[[], Iterator[str]], label: str) -> bytes:
    """A serialized SentencePiece model of the normalised sentences (streamed twice: the cache key, then the
    trainer), reused when settings and text are the same."""
    import sentencepiece as spm

    s = settings(cfg)
    key, count = _key(s, cfg, sentences())
    path = Path(cfg.paths.vocab) / f"spm.{key}.model"
    if path.is_file():
        cached = path.read_bytes()
        try:  # a damaged cache file is trained again, not reused for ever
            spm.SentencePieceProcessor(model_proto=cached)
            print(f"  {label}: reusing {path} (same SentencePiece settings and training text)", flush=True)
            return cached
        except RuntimeError:
            print(f"  {label}: {path} is not a SentencePiece model: training it again", flush=True)
    print(
        f"  {label}: training SentencePiece {s['model_type']} ({s['vocab_size']:,} pieces, coverage "
        f"{s['character_coverage']}) on {count:,} sentences, 1 thread",
        flush=True,
    )
    start = time.perf_counter()
    spm.set_random_generator_seed(s.pop("seed"))
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(x for x in sentences() if x), model_writer=buf, minloglevel=2, **s
        )
    except RuntimeError as e:
        raise InputError(f"{label}: SentencePiece training failed: {e}") from None
    model = buf.getvalue()
    write_bytes(path, model)
    size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    print(f"  {label}: {size:,} pieces in {time.perf_counter() - start:.1f}s -> {path}", flush=True)
    return model


def train(cfg: Config) -> dict[str, list[str]]:
    """Train the model(s) on the processed training pairs, write <side>.spm; returns each side's pieces in id
    order."""
    d = cfg.translate_data
    if d.subword_joint:
        joint = train_model(cfg, training_text(cfg, SIDES), f"{d.source_lang}+{d.target_lang}")
        models = {"src": joint, "tgt": joint}
    else:
        models = {
            "src": train_model(cfg, training_text(cfg, ("src",)), d.source_lang),
            "tgt": train_model(cfg, training_text(cfg, ("tgt",)), d.target_lang),
        }
    for side, model in models.items():
        write_bytes(model_path(cfg, side), model)
    return {side: pieces(model) for side, model in models.items()}


def pieces(model: bytes) -> list[str]:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def load_model(cfg: Config, side: str) -> bytes:
    """The side's serialized model, checked against its vocabulary file (a clear error naming the file)."""
    import sentencepiece as spm

    path = model_path(cfg, side)
    try:
        model = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: SentencePiece model not found", hint="run `make vocab` first") from None
    try:
        if not model:  # SentencePiece reads an empty file as a model of no pieces
            raise RuntimeError("empty file")
        processor = spm.SentencePieceProcessor(model_proto=model)
    except (RuntimeError, OSError) as e:
        raise InputError(f"{path}: not a SentencePiece model ({e})", hint="run `make vocab` again") from None
    listed = vocab.load_named(cfg, side)
    got = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    if got != listed:
        raise InputError(
            f"{path}: a SentencePiece model of {len(got):,} pieces that do not match the {len(listed):,} lines of "
            f"{vocab.vocab_path(cfg, side)} (a model from another vocabulary)",
            hint="run `make vocab` again",
        )
    return model


def fingerprint(cfg: Config) -> dict:
    """{side: sha256 of its model} with SentencePiece ({} with words): translator.json records which pieces the
    weights were trained on, and a model trained on other pieces of the same count is refused."""
    if not enabled(cfg):
        return {}
    return {side: hashlib.sha256(load_model(cfg, side)).hexdigest() for side in SIDES}


class Tokenizer(tf.Module):
    """One side's text <-> tokens in TF ops: `tokenize` [B] strings -> [B, (tokens)] ragged strings (words or
    pieces, as listed in the vocabulary file), `detokenize` back. The exported graph holds this module."""

    def __init__(self, cfg: Config, side: str):
        super().__init__(name=f"{side}_tokenizer")
        self.cfg, self.side = cfg, side
        self.pieces, self.max_length = None, cfg.translate_data.subword_max_length
        if enabled(cfg):
            import tensorflow_text as tf_text  # only this tokenizer needs the tensorflow-text ops

            self.pieces = tf_text.SentencepieceTokenizer(model=load_model(cfg, side), out_type=tf.string)

    def tokenize(self, texts) -> tf.RaggedTensor:
        if self.pieces is None:
            return text.tokenize(texts, self.cfg.text, joiner=self.side == "tgt")
        return self.pieces.tokenize(normalize(texts, self.cfg))[:, : self.max_length]

    def detokenize(self, tokens: tf.RaggedTensor) -> tf.Tensor:
        if self.pieces is None:
            return text.detokenize(tokens)
        return self.pieces.detokenize(tokens)

    def tokenize_batches(self, texts: list[str], batch: int = 8192) -> list[list[str]]:
        """Tokenize many sentences eagerly, a batch at a time (vocabulary counts, reports, training ids)."""
        out = []
        for i in range(0, len(texts), batch):
            out.extend(text.to_lists(self.tokenize(tf.constant(texts[i : i + batch], tf.string))))
        return out
