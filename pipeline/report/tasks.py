"""The report's task sections: NER errors by entity type, translation quality by sentence length, attention."""

import collections
import json
from pathlib import Path

from pipeline.core.config import SPLITS, Config
from pipeline.ner import metrics as ner_metrics
from pipeline.report.page import Page, _json, _plt
from pipeline.translate import metrics as translate_metrics

LENGTH_BUCKETS = ((1, 10), (11, 15), (16, 20), (21, 30), (31, 1000))


def read_predictions(path: Path) -> list[tuple[list[str], list[str], list[str]]]:
    """evaluate-ner's token<TAB>gold<TAB>predicted file -> (tokens, gold, predicted) per sentence."""
    out, cur = [], ([], [], [])
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            if cur[0]:
                out.append(cur)
            cur = ([], [], [])
            continue
        for part, value in zip(cur, line.split("\t"), strict=True):
            part.append(value)
    return out


def entity_confusion(sentences) -> tuple[list[str], list[list[int]]]:
    """Counts of (gold type, predicted type) over entity spans; "none" = no entity with that exact span."""
    counts = collections.Counter()
    for _, gold, pred in sentences:
        g = {(a, b): t for t, a, b in ner_metrics.spans(gold)}
        p = {(a, b): t for t, a, b in ner_metrics.spans(pred)}
        for span in g.keys() | p.keys():
            counts[g.get(span, "none"), p.get(span, "none")] += 1
    types = sorted({t for pair in counts for t in pair} - {"none"}) + ["none"]
    return types, [[counts[g, p] for p in types] for g in types]


def ner_section(page: Page, reports: Path) -> None:
    page.heading("Named entities")
    scores = _json(reports / "ner/metrics.json")
    if scores is None:
        return page.text("No NER metrics: run `make evaluate-ner`.", missing=True)
    splits = [s for s in scores if s in SPLITS]
    types = sorted({t for s in splits for t in scores[s]["per_type"]})
    none = {"precision": 0.0, "recall": 0.0, "f1": 0.0}  # a type absent from a split
    rows = [
        [t] + [100 * scores[s]["per_type"].get(t, none)[k] for s in splits for k in ("precision", "recall", "f1")]
        for t in types
    ]
    rows.append(["overall"] + [100 * scores[s][k] for s in splits for k in ("precision", "recall", "f1")])
    page.table(["type"] + [f"{s} {k}" for s in splits for k in ("P", "R", "F1")], rows)
    if "sentences_alone" in scores:
        alone = ", ".join(f"{s} F1 {100 * v['f1']:.2f}" for s, v in scores["sentences_alone"].items())
        page.text(f"Documents are tagged whole (document memory). Each sentence tagged alone: {alone}.")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.25
    for i, k in enumerate(("precision", "recall", "f1")):
        xs = [j + (i - 1) * width for j in range(len(types))]
        ax.bar(xs, [100 * scores["test"]["per_type"].get(t, none)[k] for t in types], width, label=k)
    ax.set_xticks(range(len(types)), types)
    ax.set(ylabel="%", ylim=(50, 100), title="test precision / recall / F1 by entity type (seqeval, strict IOB2)")
    ax.legend(loc="lower right")
    page.figure(fig, "ner_per_type", "NER test scores per entity type")

    pred_path = reports / "ner/predictions.test.tsv"
    if not pred_path.is_file():
        return
    sentences = read_predictions(pred_path)
    labels, matrix = entity_confusion(sentences)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow([[min(c, 400) for c in row] for row in matrix], cmap="Blues")
    for i, row in enumerate(matrix):
        for j, c in enumerate(row):
            ax.text(j, i, str(c), ha="center", va="center", fontsize=8, color="black" if c < 250 else "white")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="gold", title="entity spans, test (none = no entity at that span)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    page.figure(fig, "ner_confusion", "Entity-type confusion on test (colour capped at 400)")
    page.heading("Tagged test sentences with errors", 3)
    wrong = [s for s in sentences if s[1] != s[2]][:5]
    right = [s for s in sentences if s[1] == s[2] and len(s[0]) > 8][:2]
    for tokens, gold, pred in right + wrong:
        page.marked_html(
            [(f"{w}/{p}" if p != "O" or g != "O" else w, g != p) for w, g, p in zip(tokens, gold, pred, strict=True)]
        )
        if gold != pred:
            page.text("gold: " + " ".join(f"{w}/{g}" for w, g in zip(tokens, gold, strict=True) if g != "O"))


def bleu_by_length(rows: list[list[str]], target_lang: str = "") -> list[tuple[str, int, float]]:
    """(bucket label, sentences, sacreBLEU) by source length in words."""
    out = []
    for lo, hi in LENGTH_BUCKETS:
        sel = [r for r in rows if lo <= len(r[0].split()) <= hi]
        if sel:
            score = translate_metrics.bleu_scores([r[2] for r in sel], [r[1] for r in sel], target_lang)["bleu"]
            out.append((f"{lo}-{hi}" if hi < 1000 else f">{lo - 1}", len(sel), score))
    return out


def attention_figure(page: Page, cfg: Config, sources: list[str]) -> None:
    """Heatmaps of the translator's attention while it reads its own beam-search output back (teacher forcing)."""
    import numpy as np
    import tensorflow as tf

    from pipeline.core import text
    from pipeline.translate import decode, predict

    translator = predict.load_translator(cfg)
    model, plt = translator.model, _plt()
    fig, axes = plt.subplots(1, len(sources), figsize=(5.5 * len(sources), 5))
    for ax, sentence in zip(np.atleast_1d(axes), sources, strict=True):
        src_ids, src_tokens, _ = translator.source(tf.constant([sentence]))
        ids = decode.search(model, src_ids, translator.search_cfg).ids[0].numpy()
        ids = ids[: list(ids).index(3) + 1] if 3 in ids else ids
        memory, state = model.encode(src_ids)
        prev, rows = tf.constant([2]), []
        for tok in ids:
            _, state, weights = model.decode_step(prev, state, memory)
            rows.append(weights[0].numpy())
            prev = tf.constant([int(tok)])
        words = [
            text.strip_joiners(w.decode()) for w in translator.tgt_words.lookup(tf.constant(ids, tf.int64)).numpy()
        ]
        src = [w.decode() for w in src_tokens[0].numpy()]
        ax.imshow(np.array(rows), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(src)), src, rotation=70, fontsize=8)
        ax.set_yticks(range(len(words)), words, fontsize=8)
    fig.tight_layout()
    page.figure(fig, "attention", "Attention weights (rows: output words; columns: source words)")


def translate_section(page: Page, cfg: Config, reports: Path, attention: bool) -> None:
    d = cfg.translate_data
    page.heading(f"Translation {d.source_lang}→{d.target_lang}" if d.train else "Translation")
    scores = _json(reports / "translate/metrics.json")
    if scores is None:
        return page.text("No translation metrics: run `make evaluate-translate`.", missing=True)
    splits = [s for s in scores if s in SPLITS]
    page.table(
        ["split", "BLEU", "chrF", "sentences"],
        [[s, scores[s]["bleu"], scores[s]["chrf"], scores[s]["sentences"]] for s in splits],
    )
    page.text(f"sacreBLEU signature: {scores[splits[0]]['signature']}; search: {json.dumps(scores.get('search', {}))}")
    path = reports / "translate/translations.test.tsv"
    if not path.is_file():
        return
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    buckets = bleu_by_length(rows, cfg.translate_data.target_lang)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([b[0] for b in buckets], [b[2] for b in buckets], color="tab:purple")
    for i, (_, n, s) in enumerate(buckets):
        ax.text(i, s + 0.5, f"n={n}", ha="center", fontsize=8)
    ax.set(xlabel="source length (words)", ylabel="BLEU", title="test BLEU by source length")
    page.figure(fig, "bleu_by_length", "Test BLEU by source-sentence length")
    page.table(["source words", "sentences", "BLEU"], [list(b) for b in buckets])
    if attention:
        by_length = sorted((r[0] for r in rows[:60]), key=len)  # three of middling length, on a small set too
        picked = by_length[len(by_length) // 3 :: 13][:3] or by_length[:3]
        if picked:
            attention_figure(page, cfg, picked)
    page.heading("Sample test translations (hypothesis words missing from the reference highlighted)", 3)
    for src, ref, hyp in rows[:: max(1, len(rows) // 8)][:8]:
        ref_words = collections.Counter(ref.lower().split())
        page.text(f"source: {src}")
        page.text(f"reference: {ref}")
        parts = []
        for w in hyp.split():
            parts.append((w, ref_words[w.lower()] == 0))
            ref_words[w.lower()] -= 1
        page.marked_html([("hypothesis:", False), *parts])
