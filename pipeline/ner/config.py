"""Config sections [ner.data] (the annotated corpus) and [ner] (the tagger, its training and decoding)."""

from dataclasses import dataclass

from pipeline.core.options import average_opt, opt, step_opt


@dataclass(frozen=True)
class NerData:
    """The NER corpus: CoNLL-style column files, token first and tag last (an empty train = no NER task)."""

    lang: str = opt("en", "language of the text: picks embed.vectors.<lang>; `en` also adds English word statistics")
    train: str = opt("", "training file (plain or .gz); empty = this config has no NER task", path=True)
    valid: str = opt("", "dev file; empty = split off train by prepare.split_seed and prepare.valid_size", path=True)
    test: str = opt("", "test file; empty = split off train by prepare.split_seed and prepare.test_size", path=True)
    scheme: str = opt(
        "auto",
        "tag scheme of the files, converted to IOB2; auto = detected per file",
        ("auto", "iob1", "iob2", "bioes", "bilou"),
    )
    repair: bool = opt(
        True, "repair invalid tag transitions (an I-X opening a span in IOB2, ...) with a warning; false = error"
    )


@dataclass(frozen=True)
class Ner:
    """Stages `train-ner` / `evaluate-ner`: the BiLSTM(-CNN)-CRF tagger and its training."""

    # Model: Ma & Hovy 2016 (char CNN, BiLSTM 200, dropout 0.5, CRF; ANCHORS.md) plus casing classes, word
    # statistics, name lists and a document memory. Every default is the recommended setting, chosen by dev F1 on
    # CoNLL-2003 (docs/experiments.md).
    char_encoder: str = opt("cnn", "character features of each word: CNN + max-pool, or BiLSTM", ("cnn", "lstm"))
    char_dim: int = opt(30, "character embedding width")
    char_filters: int = opt(50, "char CNN filters (or char BiLSTM units per direction)")
    char_width: int = opt(3, "char CNN window width")
    max_word_length: int = opt(20, "characters kept per word for the char encoder (99.9% of CoNLL words are <= 15)")
    casing: bool = opt(True, "add a learned embedding of the word's casing class (lower, UPPER, Title, digits ...)")
    lexicon: bool = opt(
        True,
        "add each word's English statistics (pipeline/ner/lexicon.py: capitalisation prior, frequency, Brown "
        "cluster); only when ner.data.lang is en",
    )
    gazetteer: bool = opt(
        True,
        "add whether each word is in English lists of place names, first names and surnames "
        "(pipeline/ner/gazetteer.py); only when ner.data.lang is en",
    )
    freeze_embeddings: bool = opt(
        False, "keep the pretrained word embeddings fixed (faster to train; fine-tuning them scores higher)"
    )
    word_dropout: float = opt(0.1, "training only: replace this share of words by <unk>, so <unk> gets learned")
    pretrained_dropout: float = opt(
        0.25,
        "training only: give this share of words their pretrained vector instead of their fine-tuned row, so the "
        "tagger also learns to read the pretrained rows that valid/test words outside the train vocabulary keep",
    )
    rnn: str = opt("lstm", "recurrent cell of the encoder (both cuDNN-eligible)", ("lstm", "gru"))
    layers: int = opt(1, "bidirectional recurrent layers")
    units: int = opt(200, "recurrent units per direction")
    dropout: float = opt(0.5, "dropout on the input and output of every recurrent layer")
    output: str = opt("crf", "output layer: linear-chain CRF (Viterbi decoding) or token softmax", ("crf", "softmax"))
    doc_memory: bool = opt(
        True,
        "each capitalised word also reads the mean encoder state of its other mentions in the same document "
        "(lowercase match); training and evaluation batch whole documents",
    )
    doc_memory_dropout: float = opt(
        0.25,
        "training only: this share of sentences reads no document memory, as a sentence tagged alone will not",
    )
    ensemble: int = opt(
        1,
        "train this many taggers side by side (seeds seed, seed+1, ...) and decode with their averaged scores; "
        "each adds the time of one tagger and its serving cost (five, seeds 4-8: +0.24 test F1, a fifth the speed)",
    )
    teacher: str = opt(
        "",
        "distil a trained tagger: the paths.models directory holding its ner/ (same vocabularies and tags); its "
        "CRF's distribution over each training document's paths becomes part of the target. Empty = gold only",
        path=True,
    )
    distill_weight: float = opt(0.5, "with ner.teacher: the teacher's share of the target, the rest the gold path")
    distill_temperature: float = opt(
        3.0,
        "with ner.teacher: divide the teacher's scores by this before taking its distribution; above 1 it spreads "
        "the probability a teacher that fits its training data puts on the gold path (Hinton et al. 2015; the "
        "measured setting, docs/experiments.md)",
    )
    # Training: (lazy) Adam with global-norm clipping, early stopping on dev entity F1.
    optimizer: str = opt(
        "lazy_adam",
        "lazy_adam (Adam with sparse embedding-row updates, 1.25x faster on CPU); adam; sgd with momentum 0.9",
        ("adam", "lazy_adam", "sgd"),
    )
    learning_rate: float = opt(0.002, "initial learning rate (Ma & Hovy's SGD used 0.015)")
    lr_decay: float = opt(0.05, "learning rate of epoch e is learning_rate / (1 + lr_decay * (e - 1)); Ma & Hovy 0.05")
    clip_norm: float = opt(5.0, "clip gradients to this global norm (0 = off)")
    average_decay: float = average_opt(0.999, " (+0.23 dev F1 on CoNLL-2003)")
    batch_size: int = opt(24, "sentences per training batch (with doc_memory: whole documents, at least this many)")
    bucket_width: int = opt(
        4,
        "batch documents (or sentences) of similar length: sorted by their longest sentence plus up to 2N tokens "
        "of noise, so batches differ between epochs",
    )
    epochs: int = opt(12, "maximum training epochs (the averaged tagger peaked at epochs 9 and 12 of 12 on two seeds)")
    patience: int = opt(5, "stop after this many evaluations (epochs) without a better dev entity F1")
    save_every: int = step_opt("save_every")
    eval_every: int = step_opt("eval_every")
    max_steps: int = step_opt("max_steps")
    max_minutes: float = opt(
        0, "wall-time budget, dev scoring included: start no epoch that would end past it at the mean pace (0 = none)"
    )
    strategy: str = opt(
        "default",
        "tf.distribute: one device; `mirrored` = all local GPUs; `multi_worker` = the cluster in $TF_CONFIG "
        "(each replica takes whole documents of a batch)",
        ("default", "mirrored", "multi_worker"),
    )
    seed: int = opt(1, "seed of initialisation, dropout and shuffling")
