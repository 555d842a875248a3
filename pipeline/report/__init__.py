"""Stage `report`: one self-contained HTML page (and a Markdown twin) of how good both models are, and why.

    <paths.reports>/index.html       images embedded as data: URIs, no scripts or styles fetched: works offline
    <paths.reports>/index.md         the same content; images beside it in figures/
    <paths.reports>/figures/*.png    matplotlib figures

It reads only what the other stages wrote (reports/*.json, predictions, translations, stamps) plus, for the
attention heatmaps, the trained translator. A part whose inputs are missing says which stage to run instead.
"""

from pathlib import Path

from pipeline.core.config import Config, hooked
from pipeline.core.config import tasks as defined_tasks
from pipeline.core.files import write_text
from pipeline.report.page import Page
from pipeline.report.sections import curves_section, data_section, manifest_section, summary_section
from pipeline.report.tasks import ner_section, translate_section


def run(cfg: Config, attention: bool = True) -> None:
    reports = Path(cfg.paths.reports)
    page = Page(reports / "figures")
    page.text("Everything below is read from the files the pipeline stages wrote; rerun `make report` after training.")
    summary_section(page, cfg, reports)
    data_section(page, reports)
    curves_section(page, reports)
    if "ner" in defined_tasks(cfg):
        ner_section(page, reports)
    if "translate" in defined_tasks(cfg):
        has_model = (Path(cfg.paths.models) / "translate/translator.json").is_file()
        translate_section(page, cfg, reports, attention and has_model)
    for hooks in hooked(cfg).values():
        hooks.report_section(page, cfg, reports)
    manifest_section(page, cfg)
    title = "seq2seq-pipeline report"
    write_text(reports / "index.md", page.render_md(title))
    write_text(reports / "index.html", page.render_html(title))
    print(f"  wrote {reports / 'index.html'} and {reports / 'index.md'}")
