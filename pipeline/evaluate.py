"""Stage `evaluate-ner`: entity-level precision, recall and F1 (seqeval, strict IOB2) on valid and test.

    <paths.reports>/ner/metrics.json             {"valid": {...}, "test": {"f1", "precision", "recall",
                                                   "support", "per_type": {"PER": {...}, ...}}}
    <paths.reports>/ner/metrics.md               the same as a Markdown table
    <paths.reports>/ner/predictions.<split>.tsv  token, gold tag, predicted tag; a blank line between sentences

Every gold token is scored: decoding never truncates (text.max_length applies to raw-text input only).
"""

from pathlib import Path

from pipeline import data, metrics, predict
from pipeline.config import Config
from pipeline.files import write_json, write_lines, write_text


def run_ner(cfg: Config) -> None:
    tagger = predict.load_tagger(cfg)
    out = Path(cfg.paths.reports) / "ner"
    scores = {}
    for split in ("valid", "test"):
        sentences = data.load_ner(cfg, split)
        gold = [y for _, y in sentences]
        pred = predict.predict_tags(tagger, [w for w, _ in sentences])
        scores[split] = metrics.entity_scores(gold, pred)
        lines = []
        for (words, g), p in zip(sentences, pred, strict=True):
            lines.extend(f"{w}\t{a}\t{b}" for w, a, b in zip(words, g, p, strict=True))
            lines.append("")
        write_lines(out / f"predictions.{split}.tsv", lines)
        s = scores[split]
        print(f"  {split:5s}  P {100 * s['precision']:6.2f}  R {100 * s['recall']:6.2f}  F1 {100 * s['f1']:6.2f}")
    write_json(out / "metrics.json", scores)
    write_text(
        out / "metrics.md", "# NER, entity level (seqeval strict IOB2)\n\n" + metrics.format_ner_markdown(scores)
    )
