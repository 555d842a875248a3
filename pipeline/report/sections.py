"""The report's shared sections: summary with anchors, data, learning curves, and the run manifest."""

import importlib.metadata
import json
import subprocess
import time
from pathlib import Path

from pipeline.core.config import SECTIONS, SPLITS, Config, hooked, tasks
from pipeline.core.trainer import STOPPED
from pipeline.core.vector_packages import set_name
from pipeline.report.page import Page, _json, _plt
from pipeline.stages import fetch

PACKAGES = ("tensorflow", "tensorflow-text", "keras", "numpy", "gensim", "sacrebleu", "seqeval", "matplotlib")


def summary_section(page: Page, cfg: Config, reports: Path) -> None:
    """The headline: how good each model is on test, beside the published results the config names (a preset's;
    ../shared/docs/ANCHORS.md says how they were measured)."""
    page.heading("Summary")
    ner, tr = _json(reports / "ner/metrics.json"), _json(reports / "translate/metrics.json")
    rows, d = [], cfg.translate_data
    if ner and "ner" in tasks(cfg):
        f1 = 100 * ner["test"]["f1"]
        rows.append(["NER, test", "entity F1 (seqeval, strict IOB2)", f1, cfg.report.ner_published or "-"])
    if tr and "translate" in tasks(cfg):
        task = f"translation {d.source_lang}→{d.target_lang}, test"
        rows.append([task, "sacreBLEU (cased, detokenized)", tr["test"]["bleu"], cfg.report.translate_published or "-"])
    for hooks in hooked(cfg).values():
        rows += hooks.summary_rows(cfg, reports)
    if rows:
        page.table(["task", "metric", "ours", "published"], rows)
    else:
        page.text("No evaluation yet: run `make ner` or `make translate`.", missing=True)


def data_section(page: Page, reports: Path) -> None:
    page.heading("Data")
    stats, vocab, emb = (_json(reports / f) for f in ("data.json", "vocab.json", "embeddings.json"))
    if stats is None:
        return page.text("No data statistics: run `make prepare`.", missing=True)
    if any("splits" not in entry for task, entry in stats.items() if task != "warnings"):
        return page.text("data.json was written by an older `prepare`: run `make prepare` again.", missing=True)
    if "ner" in stats:
        splits = stats["ner"]["splits"]
        page.table(
            ["NER split", "file", "sentences", "tokens", "entities", "types", "scheme", "repaired", "in train"],
            [
                [s, stats["ner"]["files"][s], v["sentences"], v["tokens"], v["entities"], len(v["entity_types"])]
                + [v["scheme"].upper(), v["repaired"], v.get("sentences_in_train", {}).get("count", "")]
                for s, v in splits.items()
            ],
        )
        types = sorted({t for v in splits.values() for t in v["entity_types"]})
        page.table(
            ["entities by type", *splits], [[t, *(v["entity_types"].get(t, 0) for v in splits.values())] for t in types]
        )
    if "translate" in stats:
        tr = stats["translate"]
        page.table(
            [f"{'-'.join(tr['languages'])} split", "pairs", "source words p50 / p95 / max", "copies", "duplicates"]
            + ["skipped (empty side)", "source in train"],
            [
                [s, v["pairs"], "{p50:.0f} / {p95:.0f} / {max}".format(**v["source_words"]), v["copies"]]
                + [v["duplicate_pairs"], v["skipped_empty"], v.get("source_in_train", {}).get("count", "")]
                for s, v in tr["splits"].items()
            ],
        )
    hooked_tasks_data(page, stats)
    for task in (t for t in stats if t != "warnings"):
        for split, how in stats.get(task, {}).get("held_out", {}).items():
            page.text(f"{task} {split}: {how}")
    if stats.get("warnings"):
        page.heading("Data warnings", 3)
        for warning in stats["warnings"]:
            page.text(warning)
    if vocab:
        page.heading("Vocabularies and OOV rates", 3)
        rows = []
        for name, entry in vocab.items():
            rows.append(
                [name, entry["size"]] + [100 * entry[s]["oov_token_rate"] if s in entry else "" for s in SPLITS]
            )
        page.table(["vocabulary", "size", *(f"{s} OOV tokens %" for s in SPLITS)], rows)
    if emb:
        page.heading("Embedding coverage (share of running tokens with a vector)", 3)
        rows = []
        for name, entry in emb.items():
            sets = entry.get("sets", [])
            # With several sets: the matrix (a word found in any set), then one row per set.
            parts = [(name, entry)] + [(f"{name}, set {i + 1}", x) for i, x in enumerate(sets) if len(sets) > 1]
            for label, part in parts:
                toks = part["tokens"]
                cells = [100 * (1 - toks[s]["missing"]) if s in toks else "" for s in SPLITS]
                rows.append([label, entry.get("language", ""), _vector_sets(part), part["dim"], *cells])
        page.table(["matrix", "lang", "vectors", "dim", *(f"{s} %" for s in SPLITS)], rows)


def _vector_sets(entry: dict) -> str:
    """The short names of a matrix's vector sets, in their order ("word2vec" for trained ones)."""
    names = [s.get("vectors", "") for s in entry.get("sets", [entry])]
    return " + ".join("word2vec" if n in ("", "word2vec-trained") else set_name(n) for n in names)


def hooked_tasks_data(page: Page, stats: dict) -> None:
    """One table per task whose data report its own hooks wrote (lm: characters, lines, ...), as it counts them."""
    for task, entry in stats.items():
        if task in ("ner", "translate", "warnings"):
            continue
        keys = list(next(iter(entry["splits"].values())))
        page.table(
            [f"{task} split", "file", *keys],
            [[s, entry["files"][s][0], *v.values()] for s, v in entry["splits"].items()],
        )


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
        # eval_every: evaluations inside epochs, whose history epoch is a fraction (2.5)
        runs = "epochs" if all(isinstance(h["epoch"], int) for h in hist) else "evaluations"
        page.text(
            f"{name}: {len(hist)} {runs} in {total / 60:.1f} min; best {label} {scale * best[key]:.2f} at epoch "
            f"{best['epoch']}; {sum(h[speed] for h in hist) / len(hist):,.0f} {speed.replace('_per_s', '')}/s, "
            f"{100 * sum(h['padding'] for h in hist) / len(hist):.1f}% padding on average."
            + (f" Stopped by {STOPPED[hist[-1]['stopped_by']]}." if hist[-1].get("stopped_by") in STOPPED else "")
        )


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
    page.table(["raw file", "sha256"], [[s.path, s.sha256] for s in fetch.SOURCES])
    page.pre(json.dumps({name: cfg.section_dict(name) for name in SECTIONS}, indent=2))
