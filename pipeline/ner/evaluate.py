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

from pipeline.core.config import Config
from pipeline.core.files import write_json, write_lines, write_text
from pipeline.ner import corpus, metrics, predict


def run(cfg: Config) -> None:
    tagger = predict.load_tagger(cfg)
    out = Path(cfg.paths.reports) / "ner"
    scores, alone = {}, {}
    for split in ("valid", "test"):
        documents = corpus.load_ner_documents(cfg, split)
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
