"""Stage `evaluate-lm`: the best weights' loss on valid (and test, when the config names one), in nats and bits
per character with the state carried across the whole text as in training, and samples at three temperatures.

<paths.reports>/lm/metrics.json    {split: {nats_per_char, bits_per_char, characters}, samples: [...]}
"""

import math
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.files import write_json
from pipeline.lm import corpus, generate, train

TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLE_CHARS = 500


def run(cfg: Config) -> dict:
    hp = cfg.lm
    model = generate.load_model(cfg)
    chars = generate.load_chars(cfg)
    read = train.make_reader(model)
    out = {}
    for split in corpus.splits(cfg)[1:]:
        ids = train.encode(corpus.load_text(cfg, split), chars)
        nats = read(ids)
        out[split] = {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "characters": len(ids) - 1}
        print(f"  {split}: {nats:.4f} nats/char, {nats / math.log(2):.4f} bits/char over {len(ids) - 1:,} characters")
    sampler = generate.sampler(cfg, model)
    prompts = ["", "ROMEO:"] if "R" in chars else [""]
    out["samples"] = [
        {"prompt": p, "temperature": t, "seed": hp.seed, "text": text}
        for t in TEMPERATURES
        for p, text in zip(prompts, generate.generate_texts(sampler, prompts, t, SAMPLE_CHARS, hp.seed), strict=True)
    ]
    for s in out["samples"][:: len(prompts)]:
        print(f"  --- temperature {s['temperature']}, seed {s['seed']} ---\n{s['text'][:200]}")
    write_json(Path(cfg.paths.reports) / "lm/metrics.json", out)
    return out
