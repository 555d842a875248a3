"""What the language-model task gives the shared stages (pipeline/core/tasks.py): its files, its `prepare` part
(read, check, write), its vocabulary, and its export. Imports stay inside the functions: `make` asks the config
which tasks and files there are without starting TensorFlow."""

from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.files import write_text

# Data -------------------------------------------------------------------------------------------------------


def languages(cfg: Config) -> set[str]:
    return set()  # characters need no word vectors


def corpus_files(cfg: Config) -> list[str]:
    d = cfg.lm_data
    return [f for f in (d.train, d.valid, d.test) if f]


def read(cfg: Config) -> tuple[dict, dict]:
    """Each split's text as read and checked, and how the splits not given were made."""
    from pipeline.lm import corpus

    d = cfg.lm_data
    out = {s: corpus.read_text(Path(getattr(d, s))) for s in ("train", "valid", "test") if getattr(d, s)}
    if d.max_chars:
        out["train"].text = out["train"].text[: d.max_chars]
    held_out = {}
    if not d.valid:
        out["train"], out["valid"] = corpus.split_tail(out["train"], d.valid_share)
        held_out["valid"] = out["valid"].held_out
    return out, held_out


def check(cfg: Config, splits: dict, warnings: list[str]) -> dict:
    """Characters, lines and distinct characters per split; characters of valid/test never seen in train."""
    import collections

    seen = collections.Counter(splits["train"].text)
    out = {}
    for split, read in splits.items():
        counts = collections.Counter(read.text)
        unseen = sorted(c for c in counts if c not in seen)
        out[split] = {
            "characters": len(read.text),
            "lines": read.text.count("\n") + (not read.text.endswith("\n")),
            "distinct": len(counts),
            "unseen_in_train": len(unseen),
        }
        if unseen:
            shown = ", ".join(repr(c) for c in unseen[:10])
            warnings.append(f"lm/{split}: {len(unseen)} characters never seen in train (read as <unk>): {shown}")
    return out


def format_check(report: dict) -> list[str]:
    return [
        f"  lm/{split:5s}  {n['characters']:9,d} characters {n['lines']:7,d} lines {n['distinct']:5d} distinct"
        for split, n in report["splits"].items()
    ]


def write(cfg: Config, splits: dict) -> None:
    from pipeline.lm import corpus

    for split, read in splits.items():
        write_text(corpus.processed_path(cfg, split), read.text)


# Vocabulary ---------------------------------------------------------------------------------------------------


def vocabularies(cfg: Config) -> dict[str, tuple[list[str], dict]]:
    """lm_chars: <pad>, <unk>, then train's characters by falling count, one JSON string a line (a line break is
    a character too). With each split's characters, for the OOV report."""
    import collections
    import json

    from pipeline.core import vocab
    from pipeline.lm import corpus

    texts = {s: [list(corpus.load_text(cfg, s))] for s in corpus.splits(cfg)}
    counts = collections.Counter(texts["train"][0])
    chars = vocab.build(counts, (vocab.PAD, vocab.UNK), cfg.lm.min_freq)
    write_text(Path(cfg.paths.vocab) / "lm_chars.txt", "".join(json.dumps(c) + "\n" for c in chars))
    return {"lm_chars": (chars, texts)}


# Report -------------------------------------------------------------------------------------------------------


def summary_rows(cfg: Config, reports: Path) -> list[list]:
    from pipeline.report.page import _json

    m = _json(reports / "lm/metrics.json")
    if not m:
        return []
    return [
        [f"character LM, {s}", "nats / bits per character", m[s]["nats_per_char"], f"{m[s]['bits_per_char']:.3f} bits"]
        for s in ("valid", "test")
        if s in m
    ]


def report_section(page, cfg: Config, reports: Path) -> None:
    """Loss per split, the learning curve (training loss and valid nats per character), and the samples."""
    from pipeline.report.page import _json, _plt

    page.heading("Character language model")
    m, hist = _json(reports / "lm/metrics.json"), _json(reports / "lm/history.json")
    if m is None:
        return page.text("No language-model metrics: run `make evaluate-lm`.", missing=True)
    splits = [s for s in ("valid", "test") if s in m]
    page.table(
        ["split", "nats / char", "bits / char", "characters"],
        [[s, m[s]["nats_per_char"], m[s]["bits_per_char"], m[s]["characters"]] for s in splits],
    )
    if hist:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(8, 3.2))
        epochs = [h["epoch"] for h in hist]
        ax.plot(epochs, [h["loss"] for h in hist], marker="o", label="train (dropout on)")
        ax.plot(epochs, [h["valid_loss"] for h in hist], marker="o", label="valid")
        ax.set(xlabel="epoch", ylabel="nats per character", title="lm: learning curve")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        page.figure(fig, "lm_learning_curve", "Training and valid loss per epoch (nats per character)")
        total = sum(h["train_seconds"] + h.get("dev_seconds", 0) for h in hist)
        best = min(hist, key=lambda h: h["valid_loss"])
        page.text(
            f"{len(hist)} epochs in {total / 60:.1f} min; best valid {best['valid_loss']:.4f} nats/char at epoch "
            f"{best['epoch']}; {sum(h['chars_per_s'] for h in hist) / len(hist):,.0f} characters/s on average."
        )
    for s in m.get("samples", []):
        prompt = f"prompt {s['prompt']!r}" if s["prompt"] else "no prompt"
        page.heading(f"Sample: temperature {s['temperature']}, {prompt}, seed {s['seed']}", 3)
        page.pre(s["prompt"] + s["text"])
