"""Stage `report`: one self-contained HTML page (and a Markdown twin) of how good both models are, and why.

    <paths.reports>/index.html       images embedded as data: URIs, no scripts or styles fetched: works offline
    <paths.reports>/index.md         the same content; images beside it in figures/
    <paths.reports>/figures/*.png    matplotlib figures

It reads only what the other stages wrote (reports/*.json, predictions, translations, stamps) plus, for the
attention heatmaps, the trained translator. A part whose inputs are missing says which stage to run instead.
"""

import base64
import collections
import html
import importlib.metadata
import json
import subprocess
import time
from pathlib import Path

from pipeline import data, metrics
from pipeline.config import SECTIONS, Config
from pipeline.files import atomic_path, write_text

PACKAGES = ("tensorflow", "tensorflow-text", "keras", "numpy", "gensim", "sacrebleu", "seqeval", "matplotlib")
LENGTH_BUCKETS = ((1, 10), (11, 15), (16, 20), (21, 30), (31, 1000))
# The page's self-check, read by the browser test: how many images decoded, and any script error.
SELF_CHECK = """<script>
window.addEventListener("error", e => document.body.dataset.errors = (document.body.dataset.errors || "") + e.message);
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.filter(i => i.complete && i.naturalWidth > 0).length + "/" + images.length;
});
</script>"""
STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } mark { background: #ffd0d0; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.missing { color: #a00; }
</style>"""


class Page:
    """Blocks rendered twice: HTML (images inline) and Markdown (images as files beside it)."""

    def __init__(self, figures: Path):
        self.figures, self.html, self.md = figures, [], []

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append(f"{'#' * level} {text}\n")

    def text(self, text: str, missing: bool = False) -> None:
        cls = ' class="missing"' if missing else ""
        self.html.append(f"<p{cls}>{html.escape(text)}</p>")
        self.md.append(f"{'**' if missing else ''}{text}{'**' if missing else ''}\n")

    def table(self, header: list[str], rows: list[list], marked: set[tuple[int, int]] = frozenset()) -> None:
        """Cells may be str or numbers (numbers right-aligned, floats with 2 decimals); (row, col) in marked
        is highlighted as an error."""

        def fmt(x):
            return f"{x:.2f}" if isinstance(x, float) else str(x)

        cells = []
        for r, row in enumerate(rows):
            tds = []
            for c, x in enumerate(row):
                body = html.escape(fmt(x))
                body = f"<mark>{body}</mark>" if (r, c) in marked else body
                tds.append(f'<td class="num">{body}</td>' if isinstance(x, int | float) else f"<td>{body}</td>")
            cells.append("<tr>" + "".join(tds) + "</tr>")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>")

        def md_cell(r, c, x):
            s = fmt(x).replace("|", "\\|")
            return f"**{s}**" if (r, c) in marked else s

        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md_cell(r, c, x) for c, x in enumerate(row)) + " |" for r, row in enumerate(rows)]
        self.md.append("\n".join(lines) + "\n")

    def marked_html(self, parts: list[tuple[str, bool]]) -> None:
        """A line of words, the flagged ones highlighted (<mark> / **bold**)."""
        self.html.append(
            "<p>" + " ".join(f"<mark>{html.escape(w)}</mark>" if bad else html.escape(w) for w, bad in parts) + "</p>"
        )
        self.md.append(" ".join(f"**{w}**" if bad else w for w, bad in parts) + "\n")

    def pre(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md.append(f"```\n{text}\n```\n")

    def figure(self, fig, name: str, caption: str) -> None:
        import matplotlib.pyplot as plt

        path = self.figures / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        b64 = base64.b64encode(path.read_bytes()).decode()
        self.html.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        self.md.append(f"![{caption}](figures/{name}.png)\n")

    def render_html(self, title: str) -> str:
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"{STYLE}</head>\n<body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(self.html) + f"\n{SELF_CHECK}\n"
            "</body></html>\n"
        )

    def render_md(self, title: str) -> str:
        return f"# {title}\n\n" + "\n".join(self.md)


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display here, in CI or in make
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------------ sections


# Published results to compare with (../shared/docs/ANCHORS.md); theirs are measured as noted.
ANCHORS = {
    "ner": "BiLSTM-CNN-CRF 91.21 (Ma & Hovy 2016), NCRF++ 91.35",
    "translate": "attentive cGRU 37.33 (nmtpy; tokenized, lowercased BLEU: an easier measure)",
}


def summary_section(page: Page, reports: Path) -> None:
    """The headline: how good each model is on test, beside the published results."""
    page.heading("Summary")
    ner, tr = _json(reports / "ner/metrics.json"), _json(reports / "translate/metrics.json")
    rows = []
    if ner:
        rows.append(
            ["CoNLL-2003 NER, test", "entity F1 (seqeval, strict IOB2)", 100 * ner["test"]["f1"], ANCHORS["ner"]]
        )
    if tr:
        rows.append(
            ["Multi30k translation, test", "sacreBLEU (cased, detokenized)", tr["test"]["bleu"], ANCHORS["translate"]]
        )
    if rows:
        page.table(["task", "metric", "ours", "published"], rows)
    else:
        page.text("No evaluation yet: run `make evaluate-ner evaluate-translate`.", missing=True)


def data_section(page: Page, reports: Path) -> None:
    page.heading("Data")
    stats, vocab, emb = (_json(reports / f) for f in ("data.json", "vocab.json", "embeddings.json"))
    if stats is None:
        return page.text("No data statistics: run `make prepare`.", missing=True)
    ner = stats["ner"]
    page.table(
        ["CoNLL-2003 split", "sentences", "tokens", "entities"],
        [[s, v["sentences"], v["tokens"], v["entities"]] for s, v in ner.items()],
    )
    tr = stats["translate"]
    page.table(
        [f"{tr.get('corpus', 'parallel')} split", "pairs"], [[s, v["pairs"]] for s, v in tr.items() if s != "corpus"]
    )
    if vocab:
        page.heading("Vocabularies and OOV rates", 3)
        rows = []
        for name, entry in vocab.items():
            rows.append(
                [name, entry["size"]] + [100 * entry[s]["oov_token_rate"] if s in entry else "" for s in data.SPLITS]
            )
        page.table(["vocabulary", "size", *(f"{s} OOV tokens %" for s in data.SPLITS)], rows)
    if emb:
        page.heading("Embedding coverage (share of running tokens with a vector)", 3)
        rows = []
        for name, entry in emb.items():
            toks = entry["tokens"]
            rows.append(
                [name, entry.get("language", ""), Path(str(entry.get("vectors", ""))).name or "word2vec", entry["dim"]]
                + [100 * (1 - toks[s]["missing"]) if s in toks else "" for s in data.SPLITS]
            )
        page.table(["matrix", "lang", "vectors", "dim", *(f"{s} %" for s in data.SPLITS)], rows)


def curves_section(page: Page, reports: Path) -> None:
    page.heading("Learning curves")
    plt = _plt()
    runs = [
        ("ner", "dev_f1", "dev entity F1 (%)", 100),
        ("translate", "dev_bleu", "dev BLEU (greedy)", 1),
    ]
    found = [(name, key, label, scale, _json(reports / name / "history.json")) for name, key, label, scale in runs]
    found = [f for f in found if f[-1]]
    if not found:
        return page.text("No training history: run `make train-ner` / `make train-translate`.", missing=True)
    fig, axes = plt.subplots(len(found), 2, figsize=(10, 3.2 * len(found)), squeeze=False)
    for row, (name, key, label, scale, hist) in zip(axes, found, strict=True):
        epochs = [h["epoch"] for h in hist]
        row[0].plot(epochs, [h["loss"] for h in hist], marker="o")
        row[0].set(title=f"{name}: training loss", xlabel="epoch", ylabel="loss")
        row[1].plot(epochs, [scale * h[key] for h in hist], marker="o", color="tab:green")
        row[1].set(title=f"{name}: {label}", xlabel="epoch", ylabel=label)
        for ax in row:
            ax.grid(alpha=0.3)
    fig.tight_layout()
    page.figure(fig, "learning_curves", "Training loss and dev score per epoch")
    for name, key, label, scale, hist in found:
        best = max(hist, key=lambda h: h[key])
        total = sum(h["train_seconds"] + h.get("dev_seconds", 0) for h in hist)
        speed = "words_per_s" if name == "ner" else "tokens_per_s"
        page.text(
            f"{name}: {len(hist)} epochs in {total / 60:.1f} min; best {label} {scale * best[key]:.2f} at epoch "
            f"{best['epoch']}; {sum(h[speed] for h in hist) / len(hist):,.0f} {speed.replace('_per_s', '')}/s, "
            f"{100 * sum(h['padding'] for h in hist) / len(hist):.1f}% padding on average."
        )


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
        g = {(a, b): t for t, a, b in metrics.spans(gold)}
        p = {(a, b): t for t, a, b in metrics.spans(pred)}
        for span in g.keys() | p.keys():
            counts[g.get(span, "none"), p.get(span, "none")] += 1
    types = sorted({t for pair in counts for t in pair} - {"none"}) + ["none"]
    return types, [[counts[g, p] for p in types] for g in types]


def ner_section(page: Page, reports: Path) -> None:
    page.heading("Named entities (CoNLL-2003)")
    scores = _json(reports / "ner/metrics.json")
    if scores is None:
        return page.text("No NER metrics: run `make evaluate-ner`.", missing=True)
    splits = [s for s in scores if s in data.SPLITS]
    types = sorted(scores[splits[0]]["per_type"])
    rows = [
        [t] + [100 * scores[s]["per_type"][t][k] for s in splits for k in ("precision", "recall", "f1")] for t in types
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
        ax.bar(xs, [100 * scores["test"]["per_type"][t][k] for t in types], width, label=k)
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


def bleu_by_length(rows: list[list[str]]) -> list[tuple[str, int, float]]:
    """(bucket label, sentences, sacreBLEU) by source length in words."""
    out = []
    for lo, hi in LENGTH_BUCKETS:
        sel = [r for r in rows if lo <= len(r[0].split()) <= hi]
        if sel:
            score = metrics.bleu_scores([r[2] for r in sel], [r[1] for r in sel])["bleu"]
            out.append((f"{lo}-{hi}" if hi < 1000 else f">{lo - 1}", len(sel), score))
    return out


def attention_figure(page: Page, cfg: Config, sources: list[str]) -> None:
    """Heatmaps of the translator's attention while it reads its own beam-search output back (teacher forcing)."""
    import numpy as np
    import tensorflow as tf

    from pipeline import decode, predict, text

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
    page.heading("Translation (Multi30k)" if cfg.prepare.translation_corpus == "multi30k" else "Translation")
    scores = _json(reports / "translate/metrics.json")
    if scores is None:
        return page.text("No translation metrics: run `make evaluate-translate`.", missing=True)
    splits = [s for s in scores if s in data.SPLITS]
    page.table(
        ["split", "BLEU", "chrF", "sentences"],
        [[s, scores[s]["bleu"], scores[s]["chrf"], scores[s]["sentences"]] for s in splits],
    )
    page.text(f"sacreBLEU signature: {scores[splits[0]]['signature']}; search: {json.dumps(scores.get('search', {}))}")
    path = reports / "translate/translations.test.tsv"
    if not path.is_file():
        return
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    buckets = bleu_by_length(rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([b[0] for b in buckets], [b[2] for b in buckets], color="tab:purple")
    for i, (_, n, s) in enumerate(buckets):
        ax.text(i, s + 0.5, f"n={n}", ha="center", fontsize=8)
    ax.set(xlabel="source length (words)", ylabel="BLEU", title="test BLEU by source length")
    page.figure(fig, "bleu_by_length", "Test BLEU by source-sentence length")
    page.table(["source words", "sentences", "BLEU"], [list(b) for b in buckets])
    if attention:
        attention_figure(page, cfg, [r[0] for r in sorted(rows[:60], key=lambda r: len(r[0]))[20:60:13]][:3])
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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10).stdout
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def manifest_section(page: Page, cfg: Config) -> None:
    page.heading("Run manifest")
    page.table(["item", "value"], [["git commit", git_commit()], ["written", time.strftime("%Y-%m-%d %H:%M:%S %Z")]])
    versions = []
    for p in PACKAGES:
        try:
            versions.append([p, importlib.metadata.version(p)])
        except importlib.metadata.PackageNotFoundError:
            versions.append([p, "not installed"])
    page.table(["package", "version"], versions)
    stamps = sorted(Path(cfg.paths.stamps).glob("*.done"), key=lambda p: p.stat().st_mtime)
    rows = [[d["stage"], float(d["seconds"])] for d in map(_json, stamps) if d]
    if rows:
        page.table(["stage", "wall time (s)"], rows)
    page.table(["raw file", "sha256"], [[s.path, s.sha256] for s in data.SOURCES])
    page.pre(json.dumps({name: cfg.section_dict(name) for name in SECTIONS}, indent=2))


def run(cfg: Config, attention: bool = True) -> None:
    reports = Path(cfg.paths.reports)
    page = Page(reports / "figures")
    page.text("Everything below is read from the files the pipeline stages wrote; rerun `make report` after training.")
    summary_section(page, reports)
    data_section(page, reports)
    curves_section(page, reports)
    ner_section(page, reports)
    has_model = (Path(cfg.paths.models) / "translate/translator.json").is_file()
    translate_section(page, cfg, reports, attention and has_model)
    manifest_section(page, cfg)
    title = "seq2seq-pipeline report"
    write_text(reports / "index.md", page.render_md(title))
    write_text(reports / "index.html", page.render_html(title))
    print(f"  wrote {reports / 'index.html'} and {reports / 'index.md'}")
