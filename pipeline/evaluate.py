"""Stage `evaluate-ner`: entity-level precision, recall and F1 (seqeval, strict IOB2) on valid and test.

    <paths.reports>/ner/metrics.json             {"valid": {...}, "test": {"f1", "precision", "recall",
                                                   "support", "per_type": {"PER": {...}, ...}}}
                                                  with ner.doc_memory also "sentences_alone": {"valid": {"f1",
                                                  "precision", "recall"}, "test": ...}, each sentence tagged
                                                  without its document, as serving_default tags it
    <paths.reports>/ner/metrics.md               the same as a Markdown table
    <paths.reports>/ner/predictions.<split>.tsv  token, gold tag, predicted tag; a blank line between sentences

Every gold token is scored: decoding never truncates (text.max_length applies to raw-text input only).
"""

from pathlib import Path

from pipeline import data, metrics, predict
from pipeline.config import Config
from pipeline.files import write_json, write_lines, write_text
from pipeline.progress import Progress


def run_ner(cfg: Config) -> None:
    tagger = predict.load_tagger(cfg)
    out = Path(cfg.paths.reports) / "ner"
    scores, alone = {}, {}
    for split in ("valid", "test"):
        documents = data.load_ner_documents(cfg, split)
        sentences = [s for d in documents for s in d]
        gold = [y for _, y in sentences]
        pred = predict.predict_tags(tagger, [w for w, _ in sentences], predict.document_ids(documents))
        scores[split] = metrics.entity_scores(gold, pred)
        if tagger.model.hp.doc_memory:
            lone = metrics.entity_scores(gold, predict.predict_tags(tagger, [w for w, _ in sentences]))
            alone[split] = {k: lone[k] for k in ("f1", "precision", "recall")}
        lines = []
        for (words, g), p in zip(sentences, pred, strict=True):
            lines.extend(f"{w}\t{a}\t{b}" for w, a, b in zip(words, g, p, strict=True))
            lines.append("")
        write_lines(out / f"predictions.{split}.tsv", lines)
        s = scores[split]
        print(f"  {split:5s}  P {100 * s['precision']:6.2f}  R {100 * s['recall']:6.2f}  F1 {100 * s['f1']:6.2f}")
    markdown = "# NER, entity level (seqeval strict IOB2)\n\n" + metrics.format_ner_markdown(scores)
    if alone:
        line = ", ".join(f"{split} F1 {100 * s['f1']:.2f}" for split, s in alone.items())
        print(f"  each sentence alone (serving_default, no document memory): {line}")
        markdown += f"\nEach sentence tagged alone, without its document (as `serving_default` tags it): {line}.\n"
    write_json(out / "metrics.json", scores | ({"sentences_alone": alone} if alone else {}))
    write_text(out / "metrics.md", markdown)


def run_translate(cfg: Config) -> None:
    """Stage `evaluate-translate`: beam-search translations of valid and test, scored with sacreBLEU.

    <paths.reports>/translate/metrics.json             {"valid": {...}, "test": {"bleu", "chrf", "signature", ...}}
    <paths.reports>/translate/metrics.md               the same as a table, plus ten sample translations
    <paths.reports>/translate/translations.<split>.tsv source, reference, hypothesis per line
    """
    translator = predict.load_translator(cfg)
    out = Path(cfg.paths.reports) / "translate"
    scores, samples = {}, []
    for split in ("valid", "test"):
        pairs = data.load_parallel(cfg, split)
        sources, references = [s for s, _ in pairs], [t for _, t in pairs]
        progress = Progress(len(sources), f"translating {split}")
        hyps = predict.translate_texts(translator, sources, cfg.translate.batch_size, progress)
        progress.close()
        scores[split] = metrics.bleu_scores(hyps, references)
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
