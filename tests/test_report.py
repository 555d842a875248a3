"""`make report`: the page's building blocks, and the whole page rendered in headless Chromium from tiny trained
models (every image decodes, no console message)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import report
from pipeline.report import page as report_page
from pipeline.report import tasks as report_tasks
from tests.conftest import TRAINED_SETTINGS, copy_run, tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (`apt-get install chromium`, as .ci/run does)"
)


def test_entity_confusion_counts_spans_by_gold_and_predicted_type():
    sentences = [
        (["a", "b", "c", "d"], ["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-ORG"]),
        (["e", "f"], ["O", "O"], ["B-MISC", "O"]),
    ]
    labels, matrix = report_tasks.entity_confusion(sentences)
    assert labels == ["LOC", "MISC", "ORG", "PER", "none"]
    cell = {(g, p): matrix[labels.index(g)][labels.index(p)] for g in labels for p in labels}
    assert cell["PER", "PER"] == 1 and cell["LOC", "ORG"] == 1 and cell["none", "MISC"] == 1
    assert sum(map(sum, matrix)) == 3


def test_read_predictions_round_trip(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("EU\tB-ORG\tB-ORG\nrejects\tO\tO\n\nPeter\tB-PER\tB-LOC\n\n")
    assert report_tasks.read_predictions(path) == [
        (["EU", "rejects"], ["B-ORG", "O"], ["B-ORG", "O"]),
        (["Peter"], ["B-PER"], ["B-LOC"]),
    ]


def test_bleu_by_length_buckets_by_source_words():
    rows = [["a b c", "Ein Hund läuft .", "Ein Hund läuft ."], [" ".join("x" * 12), "Eine Katze .", "Ein Hund ."]]
    buckets = report_tasks.bleu_by_length(rows)
    assert [(b[0], b[1]) for b in buckets] == [("1-10", 1), ("11-15", 1)]
    assert buckets[0][2] == pytest.approx(100) and buckets[1][2] < 100


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """Load a page in headless Chromium: (the DOM after load, the console messages it logged)."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
    ]  # fmt: skip
    run = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    return run.stdout, [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def built(synthetic_run, tmp_path_factory):
    """A copy of the session's tiny models, trained and evaluated on synthetic data, then `report.run`."""
    cfg = copy_run(synthetic_run, tmp_path_factory.mktemp("report") / "run", *TRAINED_SETTINGS)
    report.run(cfg)
    return cfg


def test_report_has_every_part(built):
    reports = Path(built.paths.reports)
    page = (reports / "index.html").read_text()
    md = (reports / "index.md").read_text()
    assert "<h2>Summary</h2>" in page and "entity F1" in md and "sacreBLEU" in md
    for part in ("Learning curves", "Named entities", "Translation", "Run manifest", "BLEU by source-sentence length"):
        assert part.lower() in page.lower(), part
    assert page.count('src="data:image/png;base64,') == 5  # curves, per type, confusion, BLEU/length, attention
    assert "http://" not in page and "https://" not in page  # nothing fetched: works offline
    for name in ("learning_curves", "ner_per_type", "ner_confusion", "bleu_by_length", "attention"):
        assert f"(figures/{name}.png)" in md and (reports / f"figures/{name}.png").stat().st_size > 1000
    assert re.search(r"git commit \| [0-9a-f]{40}|git commit \| unknown", md)
    assert "| tensorflow | 2.21" in md


def test_missing_inputs_are_named_not_fatal(tmp_path):
    cfg = tiny_config(tmp_path)
    report.run(cfg)
    md = (tmp_path / "reports/index.md").read_text()
    assert "run `make evaluate-ner`" in md and "run `make evaluate-translate`" in md


@needs_chromium
def test_page_renders_in_headless_chromium(built, tmp_path):
    dom, console = render(Path(built.paths.reports) / "index.html", tmp_path / "profile")
    assert 'data-images="5/5"' in dom, re.findall(r"<body[^>]*>", dom)
    assert "data-errors" not in dom
    assert console == []


@needs_chromium
def test_browser_check_catches_broken_pages(tmp_path):
    """The same check fails on a page with a broken image and a script error, so the test above can fail."""
    bad = tmp_path / "bad.html"
    bad.write_text(f"<html><body><img src='missing.png'>{report_page.SELF_CHECK}<script>nope();</script></body></html>")
    dom, console = render(bad, tmp_path / "profile")
    assert 'data-images="0/1"' in dom and "data-errors" in dom
    # The one console message is the script error, from this page (the broken image shows in data-images).
    assert len(console) == 1, console
    assert f'"Uncaught ReferenceError: nope is not defined", source: {bad.resolve().as_uri()}' in console[0]
