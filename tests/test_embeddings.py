import collections
import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
from gensim.models import KeyedVectors, Word2Vec

from pipeline.core import vectors
from pipeline.core.config import SPLITS
from pipeline.core.errors import InputError
from pipeline.ner import corpus as ner_corpus
from pipeline.stages import embed as embed_stage
from tests.conftest import MIRROR, ROOT, TINY, needs_data, path_overrides, tiny_config, write_processed_pairs

VECS = {"the": [0.1, 0.2, 0.3], "Germany": [1.0, 0.0, 0.0], "cat": [0.0, 1.0, 0.5], ".": [0.0, 0.0, 1.0]}


def glove(vecs=VECS) -> bytes:
    return "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vecs.items()).encode()


def word2vec(vecs=VECS) -> bytes:
    return f"{len(vecs)} {len(next(iter(vecs.values())))}\n".encode() + glove(vecs)


def word2vec_binary(vecs=VECS) -> bytes:
    records = b"".join(w.encode() + b" " + np.asarray(v, np.float32).tobytes() for w, v in vecs.items())
    return f"{len(vecs)} {len(next(iter(vecs.values())))}\n".encode() + records


def write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------------------ formats

FORMATS = [  # file name, embed.format, what auto-detection finds, content
    ("en.txt", "glove", "glove", glove()),
    ("en.txt.gz", "glove", "glove", gzip.compress(glove())),
    ("en.w2v.txt", "word2vec", "word2vec", word2vec()),
    ("en.bin", "word2vec_binary", "word2vec_binary", word2vec_binary()),
    ("en.vec", "fasttext", "word2vec", word2vec()),  # fastText .vec is word2vec text
]


@pytest.mark.parametrize("name, fmt, detected, content", FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_loads_the_same_vectors(tmp_path, name, fmt, detected, content):
    path = write(tmp_path / name, content)
    for asked, expected in ((fmt, fmt), ("auto", detected)):
        kv, got = vectors.load_vectors(path, asked)
        assert got == expected
        assert kv.index_to_key == list(VECS)
        np.testing.assert_array_equal(kv.vectors, np.asarray(list(VECS.values()), np.float32))


def test_auto_detection_reads_the_header_and_the_bytes(tmp_path):
    assert vectors.detect_format(write(tmp_path / "a.txt", glove())) == "glove"
    assert vectors.detect_format(write(tmp_path / "b.txt", word2vec())) == "word2vec"
    assert vectors.detect_format(write(tmp_path / "c", word2vec_binary())) == "word2vec_binary"
    assert vectors.detect_format(write(tmp_path / "d.gz", gzip.compress(word2vec_binary()))) == "word2vec_binary"


# ------------------------------------------------------------------------------ alignment and matrix


def keyed(words: list[str], dim: int = 2) -> KeyedVectors:
    kv = KeyedVectors(dim)
    kv.add_vectors(words, np.arange(len(words) * dim, dtype=np.float32).reshape(len(words), dim) + 1)
    return kv


def test_align_tries_exact_then_lowercase_then_capitalized_then_without_joiners():
    kv = keyed(["Germany", "apple", ",", "Paris", "paris"])
    tokens = ["<pad>", "<unk>", "GERMANY", "Apple", "￭,", "Paris", "PARIS", "nope"]
    rows, kinds = embed_stage.align(tokens, kv, n_specials=2, joiners=True)
    assert kinds == ["special", "special", "case", "case", "joiner", "exact", "case", "missing"]
    assert rows.tolist() == [-1, -1, 0, 1, 2, 3, 4, -1]  # "PARIS" finds the lowercase form first
    _, kinds = embed_stage.align(tokens, kv, n_specials=2, joiners=False)  # sources have no joiner marks
    assert kinds[4] == "missing"


def test_matrix_pad_row_is_zero_and_oov_rows_are_seeded(tmp_path):
    kv = keyed(["a", "b"], dim=4)
    rows = np.array([-1, -1, 0, -1, 1])

    def matrix(*overrides, name="src"):
        return embed_stage.build_matrix(rows, kv, tiny_config(tmp_path, *overrides), name)

    m = matrix("embed.seed=1")
    assert m.dtype == np.float32 and m.shape == (5, 4)
    assert not m[0].any()
    np.testing.assert_array_equal(m[[2, 4]], kv.vectors)
    assert m[[1, 3]].std() > 0.01  # seeded noise on the rows without a vector
    np.testing.assert_array_equal(m, matrix("embed.seed=1"))
    assert not np.array_equal(m, matrix("embed.seed=2"))
    assert not np.array_equal(m, matrix("embed.seed=1", name="ner_words"))  # each vocabulary its own noise
    z = matrix("embed.oov_init=zeros")
    assert not z[[0, 1, 3]].any() and np.array_equal(z[[2, 4]], kv.vectors)


def test_coverage_by_type_and_by_running_token():
    tokens = ["<pad>", "<unk>", "a", "B", "c"]
    kinds = ["special", "special", "exact", "case", "missing"]
    cov = embed_stage.coverage(tokens, kinds, {"train": collections.Counter(["a", "a", "B", "c", "zzz"])})
    assert cov["types"] == {"count": 3, "exact": 1 / 3, "case": 1 / 3, "joiner": 0.0, "missing": 1 / 3}
    # "zzz" is not in the vocabulary: it becomes <unk>, so it counts as missing
    assert cov["tokens"]["train"] == {"count": 5, "exact": 0.4, "case": 0.2, "joiner": 0.0, "missing": 0.4}


# --------------------------------------------------------------------------------------- the stage

PAIRS = ["The cat sat.\tDie Katze saß.", "A dog runs.\tEin Hund läuft.", "The dog sat.\tDer Hund saß."]
CONLL = "EU\tB-ORG\nrejects\tO\nGERMANY\tB-LOC\ncall\tO\n.\tO\n\nThe\tO\ncat\tO\n\n"
VOCABS = {
    "ner_words": ["<pad>", "<unk>", ".", "EU", "GERMANY", "The", "call", "cat", "rejects"],
    "src": ["<pad>", "<unk>", ".", "The", "cat", "sat", "A", "dog", "runs"],
    "tgt": ["<pad>", "<unk>", "<s>", "</s>", "￭.", "Die", "Katze", "saß", "Ein", "Hund", "läuft", "Der"],
}
W2V = ('embed.vectors.de=""', "embed.w2v_dim=8", "embed.w2v_epochs=2", "embed.w2v_min_count=1")


def project(tmp_path, *overrides, vectors: bytes = glove(), name: str = "en.txt"):
    """Raw vectors, processed corpora and vocabularies of an en-de run, written as the earlier stages would."""
    write(tmp_path / "raw" / "vectors" / name, vectors)
    for split in SPLITS:
        write(tmp_path / f"processed/ner/{split}.conll", CONLL.encode())
    for vocab_name, tokens in VOCABS.items():
        write(tmp_path / f"vocab/{vocab_name}.txt", "\n".join(tokens).encode() + b"\n")
    cfg = tiny_config(tmp_path, f'embed.vectors.en="{{raw}}/vectors/{name}"', *W2V, *overrides)
    write_processed_pairs(cfg, [tuple(p.split("\t")) for p in PAIRS])
    return cfg


def test_stage_writes_aligned_matrices_and_a_coverage_report(tmp_path, capsys):
    embed_stage.run(project(tmp_path))
    ner = np.load(tmp_path / "embeddings/ner_words.npy", allow_pickle=False)
    words = VOCABS["ner_words"]
    assert ner.shape == (len(words), 3) and ner.dtype == np.float32 and not ner[0].any()
    for token, word in (("GERMANY", "Germany"), ("The", "the"), (".", ".")):
        np.testing.assert_array_equal(ner[words.index(token)], np.float32(VECS[word]))
    lex = np.load(tmp_path / "embeddings/ner_lexicon.npz")
    assert lex["dense"].shape == (len(words), 6) and lex["cluster"].shape == (len(words),)
    assert not lex["dense"][:2].any() and lex["dense"][words.index("The"), 0] > 0.5  # "the" is mostly lowercase
    tgt = np.load(tmp_path / "embeddings/tgt.npy")
    assert tgt.shape == (len(VOCABS["tgt"]), 8)  # the width comes from the vectors: trained at w2v_dim

    report = json.loads((tmp_path / "reports/embeddings.json").read_text())
    assert report["ner_words"]["types"]["case"] == pytest.approx(2 / 7)
    assert report["ner_words"]["vectors"].endswith("en.txt") and report["ner_words"]["dim"] == 3
    assert report["tgt"]["vectors"] == "word2vec-trained" and report["tgt"]["types"]["exact"] == 1.0
    assert report["ner_words"]["lexicon"]["types"]["prob"] == 1.0  # every word here is common English
    out = capsys.readouterr().out
    assert "coverage" in out and "warning: ner_words vectors cover only 57.1% of train tokens" in out


def test_word2vec_is_trained_once_then_reused(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(embed_stage, "Word2Vec", lambda *a, **k: calls.append(1) or Word2Vec(*a, **k))
    cfg = project(tmp_path)
    embed_stage.run(cfg)
    first = np.load(tmp_path / "embeddings/tgt.npy")
    (trained,) = (tmp_path / "embeddings").glob("w2v.de.*.bin")
    mtime = trained.stat().st_mtime_ns
    capsys.readouterr()

    embed_stage.run(cfg)
    assert len(calls) == 1 and trained.stat().st_mtime_ns == mtime
    assert "reusing" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "embeddings/tgt.npy"), first)

    trained.unlink()  # one worker thread and a seed: retraining gives the very same vectors
    embed_stage.run(cfg)
    assert len(calls) == 2
    np.testing.assert_array_equal(np.load(tmp_path / "embeddings/tgt.npy"), first)

    embed_stage.run(
        tiny_config(tmp_path, *W2V, 'embed.vectors.en="{raw}/vectors/en.txt"', "embed.w2v_epochs=3")
    )  # new settings
    assert len(calls) == 3 and len(list((tmp_path / "embeddings").glob("w2v.de.*.bin"))) == 2


BINARY = word2vec_binary()
BAD = [  # id, file name, content, embed.format, expected "file:line: problem"
    ("dims", "en.txt", b"a 1 2 3\nb 1 2 3\nc 1 2\n", "auto", r"en.txt:3: 2 values, but line 1 has 3"),
    ("value", "en.txt", b"a 1 2 3\nb 1 x 3\n", "auto", r"en.txt:2: 'x' is not a finite number"),
    ("nan", "en.txt.gz", gzip.compress(b"a 1 2\nb nan 2\n"), "glove", r"en.txt.gz:2: 'nan' is not a finite"),
    ("empty", "en.txt", b"", "auto", r"en.txt:1: no vectors"),
    ("blank", "en.txt", b"a 1 2\n\nb 1 2\n", "auto", r"en.txt:2: blank line"),
    ("binary-as-text", "en.w2v", BINARY, "word2vec", r"en.w2v:2: not UTF-8 text"),
    ("text-as-binary", "en.bin", word2vec(), "word2vec_binary", r"en.bin:2: text, not binary"),
    ("header-count", "en.vec", b"5 2\na 1 2\nb 1 2\n", "fasttext", r"en.vec:1: header says 5 x 2, the file has 2"),
    ("no-header", "en.vec", glove(), "fasttext", r"en.vec:1: expected a 'count dim' header"),
    ("glove-with-header", "en.txt", word2vec(), "glove", r"en.txt:1: a 'count dim' header"),
    ("truncated", "en.bin", BINARY[:-5], "auto", r"en.bin: ends inside vector 4 of the 4"),
    ("not-gzip", "en.txt.gz", glove(), "auto", r"en.txt.gz: named .gz but not gzip data"),
]


@pytest.mark.parametrize("name, content, fmt, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_vectors_name_the_line_and_write_nothing(tmp_path, name, content, fmt, message):
    cfg = project(tmp_path, f"embed.format={fmt}", vectors=content, name=name)
    with pytest.raises(InputError, match=message):
        embed_stage.run(cfg)
    assert not list(tmp_path.glob("embeddings/*")) and not (tmp_path / "reports/embeddings.json").exists()


def test_cli_exits_2_with_the_line(tmp_path):
    project(tmp_path, vectors=b"a 1 2\nb 1\n")
    args = [*path_overrides(tmp_path), 'embed.vectors.en="{raw}/vectors/en.txt"', *W2V]
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "embed", "--config", str(TINY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "en.txt:2: 1 values, but line 1 has 2" in out.stderr


# ---------------------------------------------------------------------------------------- real data


@needs_data
def test_english_vectors_cover_conll_train():  # about 25 s, nearly all of it gensim reading the file
    kv, fmt = vectors.load_vectors(ROOT / MIRROR / "vectors/en.cc0.300d.txt.gz")
    assert fmt == "glove" and kv.vector_size == 300 and len(kv) == 63922
    words = [w for tokens, _ in ner_corpus.read_conll(ROOT / MIRROR / "conll2003/train.txt") for w in tokens]
    types = sorted(set(words))
    _, kinds = embed_stage.align(types, kv, n_specials=0, joiners=False)
    cov = embed_stage.coverage(types, kinds, {"train": collections.Counter(words)})["tokens"]["train"]
    assert 1 - cov["missing"] > 0.95, cov
