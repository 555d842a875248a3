"""Config sections [translate.data] (the parallel corpus) and [translate] (the translator, its training and
decoding)."""

import dataclasses
from dataclasses import dataclass

from pipeline.core.options import average_opt, opt, step_opt


@dataclass(frozen=True)
class TranslateData:
    """The parallel corpus: per split a source<TAB>target TSV, or two line-aligned files named by `{lang}`."""

    source_lang: str = opt("", "source language: an ISO 639 code or any short tag (names files, picks vectors)")
    target_lang: str = opt("", "target language code or tag")
    train: str = opt(
        "",
        "training pairs (plain or .gz): `x.tsv` = source<TAB>target lines; `x.{lang}` = the two files x.<source_lang> "
        "and x.<target_lang>, aligned by line; empty = this config has no translation task",
        path=True,
    )
    valid: str = opt("", "dev pairs, as train; empty = split off train (prepare.split_seed, valid_size)", path=True)
    test: str = opt("", "test pairs, as train; empty = split off train (prepare.split_seed, test_size)", path=True)
    # How both sides are cut into tokens. Read by the vocab and embed stages, so it lives beside the corpus.
    tokenizer: str = opt(
        "word",
        "word = the word tokenizer (pipeline/core/text.py) and a closed vocabulary; sentencepiece = subword pieces "
        "of a SentencePiece model that the vocab stage trains (pipeline/translate/subword.py)",
        ("word", "sentencepiece"),
    )
    subword_type: str = opt("unigram", "SentencePiece algorithm", ("unigram", "bpe"))
    subword_size: int = opt(8000, "SentencePiece pieces per model, specials and 256 byte pieces included")
    subword_joint: bool = opt(True, "one model (and vocabulary) for both sides; false = one per side")
    subword_coverage: float = opt(
        0.9995, "share of training characters that get a piece of their own; the rarest are spelled as UTF-8 bytes"
    )
    subword_max_length: int = opt(
        250, "pieces kept per sentence; longer input is truncated (text.max_length counts words)"
    )
    subword_vectors: str = opt(
        "word2vec",
        "initial piece embeddings: word2vec = gensim Word2Vec (embed.w2v_*) trained on the piece-tokenized training "
        "text; random = seeded noise (embed.oov_*)",
        ("word2vec", "random"),
    )


TOKENIZER_KEYS = tuple(
    f.name for f in dataclasses.fields(TranslateData) if f.name.partition("_")[0] in ("tokenizer", "subword")
)
SUBWORD_KEYS = TOKENIZER_KEYS[1:]


def read_by(cfg, stage: str) -> dict:
    """The [translate.data] keys a stage reads, for its config stamp: prepare reads none of the tokenizer's; the
    others read the subword keys only with SentencePiece, and vocab not subword_vectors. So a tokenizer key that
    does nothing reruns nothing (a rerun vocab stage would retrain every task)."""
    data = cfg.section_dict("translate.data")
    pieces = data["tokenizer"] == "sentencepiece"
    unread = {"prepare": TOKENIZER_KEYS, "vocab": ("subword_vectors",) if pieces else SUBWORD_KEYS}
    return {k: v for k, v in data.items() if k not in unread.get(stage, () if pieces else SUBWORD_KEYS)}


def stage_inputs(cfg, stage: str) -> dict:
    """What a stage that reads [translate.data] stamps: its sections, with only the tokenizer keys it reads."""
    from pipeline.core.stages import STAGES  # not at import: core/config imports this module

    return {s: cfg.section_dict(s) for s in STAGES[stage].sections} | {"translate.data": read_by(cfg, stage)}


@dataclass(frozen=True)
class Translate:
    """Stages `train-translate` / `evaluate-translate`: the attentional LSTM encoder-decoder and its decoding."""

    seed: int = opt(1, "seed of initialisation and shuffling")
    # Model. Embedding widths and vocabulary sizes come from the embed/vocab artifacts, never from here.
    cell: str = opt("lstm", "recurrent cell of encoder and decoder", ("lstm", "gru"))
    encoder_layers: int = opt(1, "stacked bidirectional encoder layers (residual connections from the 2nd on)")
    encoder_units: int = opt(256, "encoder units per direction")
    decoder_units: int = opt(512, "decoder units (also the width of the attentional hidden state)")
    attention: str = opt("luong_general", "attention score", ("luong_general", "luong_dot", "bahdanau"))
    input_feeding: bool = opt(True, "feed the attentional hidden state into the next decoder step (Luong)")
    tie_embeddings: bool = opt(True, "output layer shares the target embedding matrix (projected when widths differ)")
    freeze_embeddings: bool = opt(False, "keep the pretrained embedding matrices fixed")
    dropout: float = opt(0.3, "dropout on embeddings, between encoder layers and on the attentional hidden state")
    word_dropout: float = opt(0.1, "share of real source and decoder-input tokens replaced by <unk> in training")
    label_smoothing: float = opt(0.1, "label smoothing of the training loss")
    average_decay: float = average_opt(0.999, " (+0.54 val BLEU on Multi30k en→de)")
    # Training (Adam with clipping; halve the rate on a dev plateau; stop after `patience` bad epochs).
    learning_rate: float = opt(1e-3, "Adam learning rate")
    clip_norm: float = opt(1.0, "global gradient-norm clipping (0 = off)")
    batch_size: int = opt(64, "sentence pairs per batch")
    batch_tokens: int = opt(
        4096,
        "most padded positions per batch (pairs x the longer side, </s> included): a batch of longer pairs is cut "
        "into smaller ones, so training memory is bounded whatever the corpus's longest pairs (0 = no cap)",
    )
    input: str = opt(
        "memory",
        "memory = every training pair tokenized once into memory, batched in length-sorted pools (fastest while it "
        "fits); files = read from the processed files in the graph with a shuffle buffer (memory holds the buffer)",
        ("memory", "files"),
    )
    shuffle_buffer: int = opt(100_000, "pairs in the shuffle buffer of input = files")
    epochs: int = opt(15, "maximum training epochs")
    lr_decay: float = opt(0.5, "multiply the learning rate by this when dev BLEU does not improve")
    lr_patience: int = opt(0, "evaluations (epochs) without dev improvement before the learning rate decays")
    patience: int = opt(3, "evaluations (epochs) without dev improvement before training stops")
    save_every: int = step_opt("save_every")
    eval_every: int = step_opt("eval_every")
    max_steps: int = step_opt("max_steps")
    max_minutes: float = opt(
        0, "wall-time budget, dev BLEU included: start no epoch that would end past it at the mean pace (0 = none)"
    )
    strategy: str = opt(
        "default",
        "tf.distribute: one device; `mirrored` = all local GPUs; `multi_worker` = the cluster in $TF_CONFIG",
        ("default", "mirrored", "multi_worker"),
    )
    mixed_precision: str = opt(
        "off",
        "compute dtype, weights float32 always: off = float32; float16 = mixed_float16 with dynamic loss scaling, "
        "for GPUs (slow on CPUs); bfloat16 = mixed_bfloat16, for CPUs with bfloat16 instructions (AVX512-BF16, "
        "AMX: 1.42x the float32 step on an AMD EPYC; emulated, so time it first, on CPUs without them)",
        ("off", "float16", "bfloat16"),
    )
    dev_beam_width: int = opt(1, "beam used for the per-epoch dev BLEU (1 = greedy: fast, and ranks epochs alike)")
    # Decoding.
    beam_width: int = opt(5, "beam size (1 = greedy)")
    length_penalty: float = opt(0.6, "GNMT length penalty alpha: score = log P / ((5 + len) / 6) ** alpha; 0 = none")
    max_length_a: float = opt(1.5, "output length limit a * source_length + b, a")
    max_length_b: int = opt(10, "output length limit a * source_length + b, b")
    replace_unk: bool = opt(True, "replace <unk> in the output by the most attended source token")
