"""Stage `evaluate-translate`: beam-search translations of valid and test, scored with sacreBLEU."""

from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.files import write_json, write_lines, write_text
from pipeline.core.progress import Progress
from pipeline.translate import corpus, metrics, predict


def run(cfg: Config) -> None:
    """Stage `evaluate-translate`: beam-search translations of valid and test, scored with sacreBLEU.

    <paths.reports>/translate/metrics.json             {"valid": {...}, "test": {"bleu", "chrf", "signature", ...}}
    <paths.reports>/translate/metrics.md               the same as a table, plus ten sample translations
    <paths.reports>/translate/translations.<split>.tsv source, reference, hypothesis per line
    """
    translator = predict.load_translator(cfg)
    out = Path(cfg.paths.reports) / "translate"
    scores, samples = {}, []
    for split in ("valid", "test"):
        pairs = corpus.load_parallel(cfg, split)
        sources, references = [s for s, _ in pairs], [t for _, t in pairs]
        progress = Progress(len(sources), f"translating {split}")
        hyps = predict.translate_texts(translator, sources, cfg.translate.batch_size, progress)
        progress.close()
        scores[split] = metrics.bleu_scores(hyps, references, cfg.translate_data.target_lang)
        rows = list(zip(sources, references, hyps, strict=True))
        write_lines(out / f"translations.{split}.tsv", ["\t".join(r) for r in rows])
        if split == "test":
            samples = rows[:: max(1, len(rows) // 10)][:10]
        s = scores[split]
        print(f"  {split:5s}  BLEU {s['bleu']:6.2f}  chrF {s['chrf']:6.2f}  ({s['signature']})")
    write_json(out / "metrics.json", scores | {"search": predict.search_settings(translator.search_cfg)})
    write_text(out / "metrics.md", format_translate_markdown(scores, samples, translator.search_cfg))


def format_translate_markdown(scores: dict, samples: list[tuple[str, str, str]], search) -> str:
    lines = [
        "# Translation (sacreBLEU, cased, detokenized)",
        "",
        f"Beam {search.beam_width}, length penalty {search.length_penalty}, <unk> replacement "
        f"{'on' if search.replace_unk else 'off'}.",
        "",
        "| split | BLEU | chrF | sentences |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {k} | {s['bleu']:.2f} | {s['chrf']:.2f} | {s['sentences']} |" for k, s in scores.items()]
    lines += [
        "",
        f"BLEU signature: `{next(iter(scores.values()))['signature']}`",
        "",
        "## Sample test translations",
        "",
    ]
    esc = lambda t: t.replace("|", "\\|")  # noqa: E731
    lines += ["| source | reference | hypothesis |", "|---|---|---|"]
    lines += [f"| {esc(s)} | {esc(r)} | {esc(h)} |" for s, r, h in samples]
    return "\n".join(lines) + "\n"
