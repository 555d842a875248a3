import json
import os
import subprocess
import sys
import urllib.error

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import config, stages
from pipeline.core.config import SPLITS
from pipeline.core.errors import InputError
from pipeline.ner import corpus as ner_corpus
from pipeline.stages import fetch
from pipeline.stages import prepare as prepare_stage
from pipeline.translate import corpus as translate_corpus
from tests.conftest import RAW_CONLL, ROOT, fake_raw, needs_data, path_overrides, tiny_config, write_file


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # IOB1
        (["I-PER", "B-PER", "I-ORG"], ["B-PER", "B-PER", "B-ORG"]),  # IOB1 adjacent spans
        (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # IOB2 unchanged
        (["S-PER", "B-LOC", "E-LOC", "O"], ["B-PER", "B-LOC", "I-LOC", "O"]),  # BIOES
    ],
)
def test_to_iob2(tags, expected):
    assert ner_corpus.to_iob2(tags) == expected
    assert ner_corpus.to_iob2(ner_corpus.to_iob2(tags)) == expected


def test_read_conll_tolerates_bom_crlf_and_drops_docstart(tmp_path):
    path = write_file(tmp_path / "x.txt", b"\xef\xbb\xbf" + RAW_CONLL.replace("\n", "\r\n").encode())
    assert ner_corpus.read_conll(path) == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
        (["Peter"], ["B-PER"]),
    ]


def test_documents_keep_their_sentences(tmp_path):
    text = "-DOCSTART- -X- O O\n\na O\nb O\n\nc B-PER\n\n-DOCSTART- -X- O O\n\nd O\ne B-LOC\nf I-LOC\n\ng O\n"
    docs = ner_corpus.read_conll_documents(write_file(tmp_path / "d.txt", text.encode()))
    assert [[words for words, _ in doc] for doc in docs] == [[["a", "b"], ["c"]], [["d", "e", "f"], ["g"]]]
    # Without -DOCSTART- lines the file has no documents: each sentence is its own.
    assert len(ner_corpus.read_conll_documents(write_file(tmp_path / "n.txt", b"a O\n\nb O\n"))) == 2


def test_read_conll_two_columns_and_iob1(tmp_path):
    path = write_file(tmp_path / "x.txt", "New I-LOC\nYork I-LOC\nis O\n")
    assert ner_corpus.read_conll(path) == [(["New", "York", "is"], ["B-LOC", "I-LOC", "O"])]


@pytest.mark.parametrize(
    "text, line, message",
    [
        (RAW_CONLL.replace("rejects VBZ B-VP O", "rejects VBZ O"), 4, "expected 4 columns as on line 3, got 3"),
        (RAW_CONLL.replace("B-MISC", "X-MISC"), 5, "unknown tag 'X-MISC'"),
        (RAW_CONLL.replace("B-MISC", "MISC"), 5, "unknown tag 'MISC'"),
        (RAW_CONLL.replace("EU NNP", "EU"), 4, "expected 3 columns"),
        ("Lonely\n", 1, "expected at least 2 columns"),
    ],
)
def test_read_conll_errors_name_file_and_line(tmp_path, text, line, message):
    path = write_file(tmp_path / "bad.txt", text)
    with pytest.raises(InputError, match=rf"bad.txt:{line}: .*{message}"):
        ner_corpus.read_conll(path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = write_file(tmp_path / "bad.txt", b"EU B-ORG\nx\xff O\n")
    with pytest.raises(InputError, match=r"bad.txt:2: invalid UTF-8"):
        ner_corpus.read_conll(path)


def test_read_parallel(tmp_path):
    en = write_file(tmp_path / "a.en.gz", "A man.\nTwo\tdogs.\n", gz=True)
    de = write_file(tmp_path / "a.de", "Ein Mann.\nZwei Hunde.\n")
    assert translate_corpus.read_parallel(en, de).pairs == [("A man.", "Ein Mann."), ("Two dogs.", "Zwei Hunde.")]


def test_read_parallel_errors(tmp_path):
    en = write_file(tmp_path / "a.en", "A man.\nTwo dogs.\n")
    with pytest.raises(InputError, match="has 2 lines but .* has 1"):
        list(translate_corpus.read_parallel(en, write_file(tmp_path / "short.de", "Ein Mann.\n")))
    # An empty side is common in real corpora: the pair is skipped, and the check names its line.
    read = translate_corpus.read_parallel(en, write_file(tmp_path / "empty.de", "Ein Mann.\n  \n"))
    assert read.pairs == [("A man.", "Ein Mann.")] and read.skipped == [
        (str(tmp_path / "empty.de"), 2, "empty target sentence: pair skipped")
    ]
    with pytest.raises(InputError, match="no sentence pairs found"):
        list(translate_corpus.read_parallel(en, write_file(tmp_path / "blank.de", "\n\n")))


def test_held_out_split_is_deterministic_and_keeps_sources_together(tmp_path):
    lines = [f"Sentence {i // 2}.\tPhrase {i}.\tattribution" for i in range(200)]
    path = write_file(tmp_path / "pairs.tsv.gz", "\n".join(lines) + "\n", gz=True)

    def split(seed):
        cfg = tiny_config(
            tmp_path,
            f'translate.data.train="{path}"',
            'translate.data.valid=""',
            'translate.data.test=""',
            'ner.data.train=""',
            "prepare.valid_size=10",
            "prepare.test_size=0.05",
            f"prepare.split_seed={seed}",
        )
        return {k: v.pairs for k, v in prepare_stage.read_corpora(cfg).translate.items()}

    a = split(7)
    assert a == split(7) and split(8) != a
    sources = {k: {en for en, _ in v} for k, v in a.items()}
    assert len(sources["valid"]) == 10 and len(sources["test"]) == 5  # 5% of the 100 source sentences
    assert not sources["train"] & sources["valid"] and not sources["train"] & sources["test"]
    assert sum(len(v) for v in a.values()) == 200


def test_tsv_line_without_a_tab(tmp_path):
    with pytest.raises(InputError, match=r"fra.txt:2: expected source<TAB>target, found no tab"):
        list(translate_corpus.read_tsv(write_file(tmp_path / "fra.txt", "Go.\tVa !\nno tab here\n")))


def test_prepare_writes_plain_files(tmp_path):
    cfg = tiny_config(tmp_path, raw=fake_raw(tmp_path / "raw"))
    prepare_stage.run(cfg)
    assert ner_corpus.load_ner(cfg, "train")[0] == (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"])
    assert translate_corpus.load_parallel(cfg, "valid") == [
        ("A man .", "Ein Mann ."),
        ("Two dogs run.", "Zwei Hunde rennen."),
    ]


def test_a_stage_run_directly_warns_when_upstream_outputs_do_not_match(tmp_path, capsys):
    # `make` rebuilds stale upstream stages; `python -m pipeline <stage>` cannot, so it says what it sees.
    raw = fake_raw(tmp_path / "raw")
    cfg = tiny_config(tmp_path, raw=raw)
    stages.run(cfg, "prepare")
    assert stages.stale_upstream(cfg, "vocab") == []
    assert (
        stages.stale_upstream(tiny_config(tmp_path, f'paths.models="{tmp_path / "elsewhere"}"', raw=raw), "embed") == []
    )
    other = tiny_config(tmp_path, "prepare.split_seed=7", raw=raw)
    assert stages.stale_upstream(other, "train-translate") == [
        "prepare ran with other settings (prepare.split_seed 1234 -> 7)"
    ]
    # data ran again after prepare had read its outputs
    stamps = tmp_path / "stamps"
    (stamps / "data.done").write_text(json.dumps({"stage": "data"}))
    later = (stamps / "prepare.done").stat().st_mtime + 10
    os.utime(stamps / "data.done", (later, later))
    assert stages.stale_upstream(cfg, "evaluate-ner") == [
        "data ran again after prepare, which was built on its earlier outputs"
    ]
    # the warning is printed, and the stage still runs
    (stamps / "data.done").write_text(json.dumps({"stage": "data", "recipe": {"ner.data.train": "old.txt"}}))
    stages.run(cfg, "prepare")
    err = capsys.readouterr().err
    assert "warning: prepare: data ran with other settings (ner.data.train 'old.txt' -> " in err
    assert "`make prepare` rebuilds what is out of date first" in err


def test_processed_ner_keeps_documents_and_older_files_are_refused(tmp_path):
    cfg = tiny_config(tmp_path, raw=fake_raw(tmp_path / "raw"))
    prepare_stage.run(cfg)
    documents = ner_corpus.load_ner_documents(cfg, "train")
    assert [s for d in documents for s in d] == ner_corpus.load_ner(cfg, "train")
    path = tmp_path / "processed/ner/train.conll"
    path.write_text("EU\tB-ORG\n\n", encoding="utf-8")  # as `prepare` wrote it before documents were kept
    with pytest.raises(InputError, match=r"train\.conll: no -DOCSTART- line") as e:
        ner_corpus.load_ner_documents(cfg, "train")
    assert e.value.hint == "run `make prepare` again"


def test_cli_prepare_with_broken_conll_exits_2_and_writes_nothing(tmp_path):
    raw = fake_raw(tmp_path / "raw")
    write_file(raw / "conll2003/valid.txt", RAW_CONLL.replace("German JJ B-NP B-MISC", "German JJ B-NP"))
    base = ROOT / "configs/default.toml"
    cfg_file = write_file(
        tmp_path / "c.toml", f'base = "{base}"\n[paths]\nraw = "{raw}"\nprocessed = "{tmp_path / "processed"}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", "--config", str(cfg_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{raw / 'conll2003/valid.txt'}:5: expected 4 columns" in proc.stderr
    assert not (tmp_path / "processed").exists()


def test_data_rejects_a_corrupt_mirror_file_and_leaves_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    src = fetch.SOURCES[0]
    write_file(mirror / src.path, "not the real file")
    monkeypatch.setattr(fetch, "SOURCES", [src])
    monkeypatch.setenv("DATA_MIRROR", str(mirror))
    cfg = tiny_config(tmp_path)
    with pytest.raises(InputError, match="does not match the expected"):
        fetch.run(cfg)
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]  # no file, no temp file


def test_data_without_mirror_or_network_explains_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_MIRROR", raising=False)

    def offline(url, timeout=60):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(fetch, "_download", offline)
    with pytest.raises(InputError) as err:
        fetch.run(tiny_config(tmp_path))
    message = str(err.value)
    assert "conll2003/train.txt: no public download exists" in message
    assert "multi30k/train.en.gz" in message and "download failed" in message
    assert "DATA_MIRROR" in err.value.hint
    assert not any((tmp_path / "raw").rglob("*.tmp"))


def test_data_download_path_verifies_checksums(tmp_path, monkeypatch):
    """The download branch writes the file only when its sha256 matches."""
    monkeypatch.delenv("DATA_MIRROR", raising=False)
    src = fetch.SOURCES[0]
    monkeypatch.setattr(fetch, "SOURCES", [src])
    monkeypatch.setattr(fetch, "_download", lambda url, timeout=60: b"tampered")
    with pytest.raises(InputError, match="does not match sha256"):
        fetch.run(tiny_config(tmp_path))
    assert not (tmp_path / "raw" / src.path).exists()


@needs_data
def test_real_corpora_counts(raw_dir, tmp_path):
    cfg = tiny_config(tmp_path, "prepare.max_train=0", "prepare.max_eval=0", raw=raw_dir)
    prepare_stage.run(cfg)
    assert [len(ner_corpus.load_ner(cfg, s)) for s in SPLITS] == [14041, 3250, 3453]
    assert [len(ner_corpus.load_ner_documents(cfg, s)) for s in SPLITS] == [946, 216, 231]  # kept for doc memory
    assert [sum(len(t) for t, _ in ner_corpus.load_ner(cfg, s)) for s in SPLITS] == [203621, 51362, 46435]
    assert [len(translate_corpus.load_parallel(cfg, s)) for s in SPLITS] == [29000, 1014, 1000]


def test_removed_ner_context_tokens_is_named_in_the_error(tmp_path):
    with pytest.raises(InputError, match="prepare.ner_context_tokens was removed"):
        tiny_config(tmp_path, "prepare.ner_context_tokens=60")


@needs_data
def test_real_tatoeba_split(raw_dir, tmp_path):
    cfg = config.load(ROOT / "configs/tatoeba-en-fr.toml", path_overrides(tmp_path, raw_dir))
    splits = prepare_stage.read_corpora(cfg).translate
    assert sum(len(v.pairs) for v in splits.values()) == 142787
    assert len({en for en, _ in splits["valid"].pairs}) == 2000 == len({en for en, _ in splits["test"].pairs})


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_readers_on_arbitrary_unicode_parse_or_name_the_line(tmp_path_factory, content):
    """Fuzzed files: every reader returns data or raises InputError (exit 2); nothing else escapes."""
    base = tmp_path_factory.mktemp("fuzz")
    raw = content.encode("utf-8", "surrogatepass")
    for name in ("a.conll", "src.txt", "tgt.txt", "fra.txt"):
        (base / name).write_bytes(raw)
    (base / "tgt2.txt").write_bytes(raw[::-1])
    for read in (
        lambda: ner_corpus.read_conll(base / "a.conll"),
        lambda: translate_corpus.read_parallel(base / "src.txt", base / "tgt.txt"),
        lambda: translate_corpus.read_parallel(base / "src.txt", base / "tgt2.txt"),
        lambda: translate_corpus.read_tsv(base / "fra.txt"),
    ):
        try:
            read()
        except InputError as e:
            assert str(base) in str(e)  # names the file (and, where there is one, the line)
