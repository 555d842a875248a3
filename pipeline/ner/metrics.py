"""Entity-level precision/recall/F1 with seqeval, strict IOB2.

Strict mode counts an entity only when its B-X ... I-X span and type both match the gold span exactly;
a span that starts with I-X is no entity at all. Padding never reaches these functions: callers pass
one tag per real token.

    >>> gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    >>> pred = [["B-PER", "I-PER", "O", "B-ORG"]]
    >>> s = entity_scores(gold, pred)
    >>> round(s["precision"], 2), round(s["recall"], 2), s["per_type"]["PER"]["f1"], s["per_type"]["LOC"]["f1"]
    (0.5, 0.5, 1.0, 0.0)
    >>> spans(["O", "B-ORG", "I-ORG", "I-PER", "B-LOC"])
    [('ORG', 1, 3), ('LOC', 4, 5)]
"""

import warnings

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """{"precision", "recall", "f1", "support", "per_type": {TYPE: {...same keys}}}; overall = micro average."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred, strict=True)):
        raise ValueError("gold and predicted tag sequences must have the same lengths")
    with warnings.catch_warnings():  # seqeval's macro average warns when there are no entities at all
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)

    def clean(entry):
        return {
            "precision": float(entry["precision"]),
            "recall": float(entry["recall"]),
            "f1": float(entry["f1-score"]),
            "support": int(entry["support"]),
        }

    per_type = {k: clean(v) for k, v in sorted(report.items()) if not k.endswith(" avg")}
    return clean(report["micro avg"]) | {"per_type": per_type}


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Strict IOB2 entities as (type, start, end) token ranges, end exclusive; stray I- tags are dropped."""
    out, kind, start = [], None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if kind is not None and not (prefix == "I" and label == kind):
            out.append((kind, start, i))
            kind = None
        if prefix == "B":
            kind, start = label, i
    return out


def format_ner_markdown(scores: dict[str, dict]) -> str:
    """A Markdown table of per-type and overall scores, one column group per split."""
    splits = list(scores)
    types = sorted({t for s in scores.values() for t in s["per_type"]})
    head = "| type | " + " | ".join(f"{s} P | {s} R | {s} F1 | {s} n" for s in splits) + " |"
    rule = "|---|" + "---:|" * (4 * len(splits))

    def cells(entry):
        p, r, f = (100 * entry[k] for k in ("precision", "recall", "f1"))
        return f"{p:.2f} | {r:.2f} | {f:.2f} | {entry['support']}"

    empty = dict.fromkeys(("precision", "recall", "f1", "support"), 0)
    rows = [f"| {t} | " + " | ".join(cells(scores[s]["per_type"].get(t, empty)) for s in splits) + " |" for t in types]
    rows.append("| **all** | " + " | ".join(cells(scores[s]) for s in splits) + " |")
    return "\n".join([head, rule, *rows]) + "\n"
