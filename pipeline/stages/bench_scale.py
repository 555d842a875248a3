"""`make bench-scale`: how the pipeline's stages scale with the size of the training corpus.

    <paths.reports>/bench_scale.json   {"machine", "steps", "sizes": [{"pairs", "corpus", "stages"}], "ratios", ...}

For each size N (BENCH_SCALE_SIZES, default 100000,1000000,4000000 pairs) it generates a parallel corpus of N pairs
from the [translate.data] training corpus (pipeline/stages/scale_corpus.py: recombined and perturbed real pairs,
seeded), writes an own-data config for it (README: Train on your own data; base configs/default.toml, the first
EVAL_PAIRS pairs of the real valid and test files, no NER or LM task, every path under
<paths.processed>/bench_scale/<N>/), then runs `prepare`, `vocab`, `embed` and `train-translate` with
translate.max_steps = BENCH_SCALE_STEPS (default 200; one greedy dev evaluation at the end), each as its own
process, as a user would. Per process: wall time and its own peak resident memory (os.wait4's ru_maxrss); per
stage pairs/s = N / wall time; training tokens/s (real source + target tokens, padding not counted, dev evaluation
excluded) from its history.json. Word vocabularies are capped at VOCAB_CAP (vocab.max_size), so that the model is
the same at every size and memory measures the data path. BENCH_SCALE_STAGES=prepare,vocab runs the data stages
alone. `embed` is reported apart: it loads the English pretrained vectors (a fixed cost) and trains Word2Vec on
the German side, for which no vectors ship (one epoch here, FULL_EMBED). The ratios compare the largest size with
the smallest, per stage, as the issue's targets do. Each size's files are deleted once measured (BENCH_SCALE_KEEP=1
keeps them).

BENCH_SCALE=tiny (`make bench-scale SCALE=tiny`, what CI runs): 1000 and 3000 pairs, 5 steps, configs/tiny.toml's
model, 50 valid / test pairs. Stages take config keys only; these settings are environment variables, as
bench-peer's are.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Config, Paths
from pipeline.core.errors import InputError
from pipeline.core.files import write_json, write_lines, write_text
from pipeline.stages import scale_corpus
from pipeline.stages.bench import machine
from pipeline.translate import corpus

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("prepare", "vocab", "embed", "train-translate")
# Word vocabularies grow with the corpus (Heaps' law); uncapped, the output layer and so training memory would grow
# with them, which measures the model, not the data path. Every size reaches this cap (0.1M pairs: 16,691 English
# and 24,734 German words seen twice), so the model is the same at every size.
VOCAB_CAP = 16_000
SEED = 1
# Issue #26: peak RSS at the largest size <= 1.5x that at the smallest and under 3 GB per stage; prepare + vocab
# pairs/s at the largest size within 20 % of that at the smallest.
RSS_RATIO_GOAL, RSS_MB_GOAL, THROUGHPUT_RATIO_GOAL = 1.5, 3072, 0.8


@dataclass(frozen=True)
class Settings:
    mode: str  # "full" or "tiny"
    sizes: tuple[int, ...]
    steps: int
    keep: bool
    stages: tuple[str, ...] = STAGES

    @property
    def base(self) -> Path:
        return ROOT / "configs" / ("tiny.toml" if self.mode == "tiny" else "default.toml")

    @property
    def eval_pairs(self) -> int:
        return 50 if self.mode == "tiny" else 500


# The tiny mode checks that every stage runs and reports, in seconds: small Word2Vec vectors on its own text take
# the place of loading the English pretrained ones (over 10 s on their own).
TINY_EMBED = """
[embed]
w2v_dim = 16
w2v_epochs = 1

[embed.vectors]
en = ""
"src.en" = ""
"""
# The full mode trains Word2Vec for one epoch: memory does not depend on the number of epochs, and the default ten
# took about two hours at 4M pairs on 2 cores, longer than the rest of the bench.
FULL_EMBED = """
[embed]
w2v_epochs = 1
"""
PRESETS = {"full": ((100_000, 1_000_000, 4_000_000), 200), "tiny": ((1000, 3000), 5)}


def settings_from_env(env=os.environ) -> Settings:
    """BENCH_SCALE (full | tiny), BENCH_SCALE_SIZES (comma-separated pair counts), BENCH_SCALE_STEPS, BENCH_SCALE_KEEP
    (1 keeps each size's corpus and artifacts), BENCH_SCALE_STAGES (the last stage to run, or a list: `prepare,vocab`
    measures the data stages alone, and runs every stage up to the last named); empty means the mode's default
    (`make` passes them on empty)."""
    mode = env.get("BENCH_SCALE") or "full"
    if mode not in PRESETS:
        raise InputError(f"bench-scale: BENCH_SCALE={mode!r} is not one of: {', '.join(PRESETS)}")
    sizes, steps = PRESETS[mode]
    try:
        if env.get("BENCH_SCALE_SIZES"):
            sizes = tuple(int(s.replace("_", "")) for s in env["BENCH_SCALE_SIZES"].split(","))
        steps = int(env.get("BENCH_SCALE_STEPS") or steps)
    except ValueError as e:
        raise InputError(f"bench-scale: BENCH_SCALE_SIZES / BENCH_SCALE_STEPS must be integers ({e})") from None
    if not sizes or min(sizes) < 1 or steps < 1:
        raise InputError(f"bench-scale: sizes {sizes} and steps {steps} must be positive")
    keep = (env.get("BENCH_SCALE_KEEP") or "0") not in ("0", "false", "no")
    stages = STAGES
    if env.get("BENCH_SCALE_STAGES"):
        wanted = env["BENCH_SCALE_STAGES"].split(",")
        if unknown := [s for s in wanted if s not in STAGES]:
            raise InputError(f"bench-scale: BENCH_SCALE_STAGES: {', '.join(unknown)} not among {', '.join(STAGES)}")
        stages = STAGES[: max(STAGES.index(s) for s in wanted) + 1]  # a stage needs those before it
    return Settings(mode, tuple(sorted(set(sizes))), steps, keep, stages)


def source_pairs(cfg: Config, split: str, limit: int = 0) -> list[tuple[str, str]]:
    """The pairs of one split that [translate.data] names, read and checked as `prepare` reads them."""
    d = cfg.translate_data
    spec = getattr(d, split)
    if not spec or not d.source_lang or not d.target_lang:
        raise InputError(
            f"bench-scale: [translate.data] {split} is not set: the generated corpora derive from the config's "
            "train, valid and test files",
            hint="use configs/default.toml (Multi30k en-de) or another config naming all three",
        )
    pairs = corpus.read_split(spec, d.source_lang, d.target_lang).pairs
    return pairs[:limit] if limit else pairs


def own_data_config(work: Path, cfg: Config, settings: Settings) -> str:
    """The TOML of one size's run: the generated train files, small fixed valid / test files, every path in work."""
    d = cfg.translate_data
    paths = "\n".join(f'{f.name} = "{work / f.name}"' for f in dataclasses.fields(Paths))
    return f"""# Written by `make bench-scale` (pipeline/stages/bench_scale.py) for one corpus size.
base = "{settings.base}"

[paths]
{paths}

[prepare]
max_train = 0           # every generated pair (configs/tiny.toml keeps 300)
max_eval = 0

[translate.data]
source_lang = "{d.source_lang}"
target_lang = "{d.target_lang}"
train = "{work / "corpus" / "train.{lang}.gz"}"
valid = "{work / "corpus" / "valid.{lang}"}"
test = "{work / "corpus" / "test.{lang}"}"

[vocab]
max_size = {VOCAB_CAP}        # a fixed vocabulary, as at WMT scale: the model has one size at every corpus size

[translate]
max_steps = {settings.steps}      # then one dev evaluation, and training stops
dev_beam_width = 1
input = "files"         # the large-corpus input: a shuffle buffer, not every pair, in memory

[ner.data]
train = ""

[lm.data]
train = ""
""" + (TINY_EMBED if settings.mode == "tiny" else FULL_EMBED)


# Linux keeps a process's peak RSS across exec, and a forked (even vforked) child starts with its parent's: a stage
# started from this process (TensorFlow loaded, ~700 MB) would report at least that. So a bare Python, which
# imports nothing big, starts each stage and reports that child's own rusage (os.wait4) into a file.
LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}, f)
"""


def measure(command: list[str], log: Path) -> dict:
    """Run one process to its end: wall seconds, its own peak resident memory in MB, and its exit code."""
    result = log.with_suffix(".rusage.json")
    with open(log, "wb") as out:
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result), *command]
        code = subprocess.run(launcher, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False).returncode
    if code != 0 or not result.is_file():
        return {"seconds": 0.0, "peak_rss_mb": 0.0, "exit": code or 1}
    m = json.loads(result.read_text(encoding="utf-8"))
    return {"seconds": round(m["seconds"], 2), "peak_rss_mb": round(m["maxrss_kib"] / 1024, 1), "exit": m["exit"]}


def training_speed(reports: Path) -> dict:
    """Steps and real tokens/s over the whole run, from history.json (its train_seconds exclude dev evaluations)."""
    history = json.loads((reports / "translate" / "history.json").read_text(encoding="utf-8"))
    seconds = sum(e["train_seconds"] for e in history)
    tokens = sum(e["tokens_per_s"] * e["train_seconds"] for e in history)
    return {"steps": history[-1]["step"], "train_seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds)}


def prepare_work(work: Path, cfg: Config, settings: Settings, n: int, train: list, evals: dict) -> tuple[Path, dict]:
    """One size's corpus, valid / test files and config under work; (config path, the corpus's counts)."""
    if work.exists():
        shutil.rmtree(work)  # a previous, interrupted run's
    langs = (cfg.translate_data.source_lang, cfg.translate_data.target_lang)
    start = time.perf_counter()
    stats = scale_corpus.write(scale_corpus.generate(train, n, SEED), work / "corpus" / "train", langs)
    stats["generate_seconds"] = round(time.perf_counter() - start, 2)
    for split, pairs in evals.items():
        for side, lang in enumerate(langs):
            write_lines(work / "corpus" / f"{split}.{lang}", [p[side] for p in pairs])
    config = work / "bench.toml"
    write_text(config, own_data_config(work, cfg, settings))
    return config, stats


def bench_size(cfg: Config, settings: Settings, n: int, train: list, evals: dict) -> dict:
    """Generate, then run and measure every stage on one size; stops at the first stage that fails."""
    work = Path(cfg.paths.processed).resolve() / "bench_scale" / str(n)
    config, stats = prepare_work(work, cfg, settings, n, train, evals)
    print(f"  {n:,} pairs generated in {stats['generate_seconds']:.0f} s", flush=True)
    result = {"pairs": n, "corpus": stats, "stages": {}}
    for stage in settings.stages:
        log = work / f"{stage}.log"
        m = measure([sys.executable, "-m", "pipeline", stage, "--config", str(config)], log)
        if m.pop("exit") != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            result["error"] = f"{stage} failed: " + "\n".join(tail)
            print(f"  {stage} failed ({log}):\n" + "\n".join(tail), flush=True)
            break
        if stage == "vocab":
            sizes = json.loads((work / "reports" / "vocab.json").read_text(encoding="utf-8"))
            m["vocabulary"] = {name: sizes[name]["size"] for name in ("src", "tgt")}
        if stage != "train-translate":
            m["pairs_per_s"] = round(n / m["seconds"])
        else:
            m |= training_speed(work / "reports")
        result["stages"][stage] = m
        print(f"    {stage:<16}{m['seconds']:8.1f} s {m['peak_rss_mb']:9,.0f} MB", flush=True)
    if not settings.keep and "error" not in result:  # a failed size's logs stay for reading
        shutil.rmtree(work)
    return result


def ratios(sizes: list[dict]) -> dict:
    """Largest size against smallest: peak RSS per stage, prepare + vocab pairs/s, and the issue's targets."""
    done = [s for s in sizes if "error" not in s]
    if len(done) < 2:
        return {}
    small, large = done[0], done[-1]

    def throughput(s):
        return s["pairs"] / (s["stages"]["prepare"]["seconds"] + s["stages"]["vocab"]["seconds"])

    measured = [k for k in STAGES if k in small["stages"] and k in large["stages"]]
    rss = {k: round(large["stages"][k]["peak_rss_mb"] / small["stages"][k]["peak_rss_mb"], 2) for k in measured}
    speed = round(throughput(large) / throughput(small), 3) if "vocab" in measured else 0.0
    goals = [k for k in ("prepare", "vocab", "train-translate") if k in measured]
    return {
        "from_pairs": small["pairs"],
        "to_pairs": large["pairs"],
        "peak_rss": rss,
        "prepare_vocab_pairs_per_s": speed,
        "targets_met": {
            "peak_rss_ratio": all(rss[k] <= RSS_RATIO_GOAL for k in goals),
            "peak_rss_under_3gb": all(large["stages"][k]["peak_rss_mb"] < RSS_MB_GOAL for k in goals),
            "prepare_vocab_throughput": speed >= THROUGHPUT_RATIO_GOAL,
        },
    }


def print_table(report: dict) -> None:
    print(f"  {'pairs':>10} {'stage':<16}{'wall s':>9}{'pairs/s':>10}{'peak MB':>9}  training")
    for size in report["sizes"]:
        for stage, m in size["stages"].items():
            train = f"{m['tokens_per_s']:,} tokens/s, {m['steps']} steps" if "tokens_per_s" in m else ""
            pairs = f"{m['pairs_per_s']:,}" if "pairs_per_s" in m else "-"
            print(f"  {size['pairs']:>10,} {stage:<16}{m['seconds']:9.1f}{pairs:>10}{m['peak_rss_mb']:9,.0f}  {train}")
    r = report["ratios"]
    if r:
        rss = ", ".join(f"{k} {v:.2f}x" for k, v in r["peak_rss"].items())
        print(f"  {r['to_pairs']:,} vs {r['from_pairs']:,} pairs: peak RSS {rss}")
        print(f"  prepare + vocab pairs/s: {r['prepare_vocab_pairs_per_s']:.2f}x; targets met: {r['targets_met']}")


def run(cfg: Config) -> None:
    settings = settings_from_env()
    train = source_pairs(cfg, "train")
    evals = {split: source_pairs(cfg, split, settings.eval_pairs) for split in ("valid", "test")}
    host = {**machine(), "affinity": sorted(os.sched_getaffinity(0))}
    print(f"  sizes {', '.join(f'{n:,}' for n in settings.sizes)} pairs; {settings.steps} training steps each")
    sizes = [bench_size(cfg, settings, n, train, evals) for n in settings.sizes]
    report = {
        "unit": "wall seconds and peak resident MB per stage process; pairs/s = pairs / wall seconds; training "
        "tokens/s = real source + target tokens per second of training (dev evaluation excluded)",
        "mode": settings.mode,
        "base_config": str(settings.base.relative_to(ROOT)),
        "steps": settings.steps,
        "stages": list(settings.stages),
        "eval_pairs": settings.eval_pairs,
        "sizes": sizes,
        "ratios": ratios(sizes),
        "goals": {"peak_rss_ratio": RSS_RATIO_GOAL, "peak_rss_mb": RSS_MB_GOAL, "throughput": THROUGHPUT_RATIO_GOAL},
        "machine": host,
    }
    write_json(Path(cfg.paths.reports) / "bench_scale.json", report)
    print_table(report)
    failed = [s["pairs"] for s in sizes if "error" in s]
    if failed:
        raise InputError(f"bench-scale: a stage failed at {failed} pairs (bench_scale.json has its log's end)")
