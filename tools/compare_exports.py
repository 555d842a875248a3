"""Two exported SavedModels of one model, side by side in one process: do they answer alike, and how fast each is.

    python tools/compare_exports.py OLD_DIR NEW_DIR SENTENCES.txt [--batch 64] [--rounds 3] [--nbest 200]

Both load as TF Serving loads them (`tf.saved_model.load`, `serving_default`). Every sentence goes through both in
file order, in batches; the translations must be identical and the scores equal to 1e-5 relative, and the first
`--nbest` sentences are also compared through `translate_nbest`. Speed is sentences/s per round, the rounds
alternating between the two models so that a slow moment of the host falls on both; the ratio is the stable
figure, since absolute speeds differ between hosts by up to 2x. Exits 1 on any difference.
"""

import argparse
import json
import sys
import time

import numpy as np
import tensorflow as tf


def run(serve, texts: list[str], batch: int) -> tuple[dict, float]:
    outs, start = {}, time.perf_counter()
    for i in range(0, len(texts), batch):
        for key, value in serve(text=tf.constant(texts[i : i + batch])).items():
            outs.setdefault(key, []).append(value.numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}, time.perf_counter() - start


def differences(old: dict, new: dict, texts: list[str]) -> list[str]:
    out = []
    for key in sorted(old):
        a, b = old[key], new[key]
        if a.shape != b.shape:
            out.append(f"{key}: shape {a.shape} != {b.shape}")
        elif a.dtype.kind in "SO":
            out += [
                f"{key} [{i}] {texts[i]!r}: {x} != {y}"
                for i, (x, y) in enumerate(zip(a, b, strict=True))
                if np.any(x != y)
            ]
        elif not np.allclose(a, b, rtol=1e-5, atol=1e-6):
            out.append(f"{key}: largest difference {np.abs(a - b).max():.2e}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("sentences", help="one source sentence a line")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nbest", type=int, default=200, help="sentences also compared through translate_nbest")
    args = parser.parse_args()
    texts = [line.rstrip("\n") for line in open(args.sentences, encoding="utf-8") if line.strip()]
    models = {name: tf.saved_model.load(path) for name, path in (("old", args.old), ("new", args.new))}
    serve = {name: m.signatures["serving_default"] for name, m in models.items()}
    for s in serve.values():
        s(text=tf.constant(texts[:1]))  # the first call optimises the graph: not a serving cost

    answers, speed = {}, {"old": [], "new": []}
    for _ in range(args.rounds):
        for name in ("old", "new"):
            answers[name], seconds = run(serve[name], texts, args.batch)
            speed[name].append(round(len(texts) / seconds, 1))
    diffs = differences(answers["old"], answers["new"], texts)
    if args.nbest:
        nbest = {n: run(m.signatures["translate_nbest"], texts[: args.nbest], args.batch)[0] for n, m in models.items()}
        diffs += ["nbest " + d for d in differences(nbest["old"], nbest["new"], texts)]
    scores = [k for k in answers["old"] if answers["old"][k].dtype.kind == "f"]
    report = {
        "sentences": len(texts),
        "batch": args.batch,
        "identical": not diffs,
        "differences": diffs[:20],
        "largest_score_difference": max(
            (float(np.abs(answers["old"][k] - answers["new"][k]).max()) for k in scores), default=0.0
        ),
        "sentences_per_s": speed,
        "ratio_best": round(max(speed["new"]) / max(speed["old"]), 2),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
