"""Stage `prepare`: read and check every raw corpus, then write the processed splits (nothing is written until
everything has been read and checked).

    <paths.processed>/ner/{train,valid,test}.conll     -DOCSTART- lines, token<TAB>IOB2 tag, blank line after sentences
    <paths.processed>/translate/{train,valid,test}.tsv  source<TAB>target per line, raw (untokenized, cased) text
    <paths.reports>/data.json                           counts per split
"""

from pathlib import Path

from pipeline.core.config import SPLITS, Config
from pipeline.core.files import write_json, write_lines
from pipeline.ner import corpus as ner_corpus
from pipeline.translate import corpus as translate_corpus


def _limit_documents(documents: list, split: str, cfg: Config) -> list[list[tuple[list, list]]]:
    """Whole documents, cut after prepare.max_train / max_eval sentences in all."""
    n = cfg.prepare.max_train if split == "train" else cfg.prepare.max_eval
    out, total = [], 0
    for document in documents:
        sentences = document[: n - total] if n else document
        if sentences:
            out.append(sentences)
        total += len(sentences)
        if n and total >= n:
            break
    return out


def _limit(items: list, split: str, cfg: Config) -> list:
    n = cfg.prepare.max_train if split == "train" else cfg.prepare.max_eval
    return items[:n] if n else items


def run(cfg: Config) -> None:
    """Read every raw corpus, check it, and write the processed splits plus data/reports/data.json."""
    raw, out = Path(cfg.paths.raw), Path(cfg.paths.processed)
    # Read and check everything before writing anything, so bad input leaves paths.processed untouched.
    documents = {s: ner_corpus.read_conll_documents(raw / f"conll2003/{s}.txt") for s in SPLITS}
    ner = {s: _limit_documents(docs, s, cfg) for s, docs in documents.items()}
    parallel = {s: _limit(pairs, s, cfg) for s, pairs in translate_corpus.translation_splits(cfg).items()}

    stats = {"ner": {}, "translate": {}}
    for split, docs in ner.items():
        lines = []
        for doc in docs:  # -DOCSTART- lines keep the documents: the tagger's document memory reads them
            lines += ["-DOCSTART-", ""]
            for tokens, tags in doc:
                lines.extend(f"{tok}\t{tag}" for tok, tag in zip(tokens, tags, strict=True))
                lines.append("")
        write_lines(out / f"ner/{split}.conll", lines)
        sentences = [s for doc in docs for s in doc]
        stats["ner"][split] = {
            "documents": len(documents[split]),
            "sentences": sum(len(d) for d in documents[split]),
            "sequences": len(sentences),
            "tokens": sum(len(t) for t, _ in sentences),
            "entities": sum(tag.startswith("B-") for _, tags in sentences for tag in tags),
        }
    for split, pairs in parallel.items():
        write_lines(out / f"translate/{split}.tsv", (f"{s}\t{t}" for s, t in pairs))
        stats["translate"][split] = {"pairs": len(pairs)}
    stats["translate"]["corpus"] = (
        f"{cfg.prepare.translation_corpus} {cfg.prepare.source_lang}-{cfg.prepare.target_lang}"
    )
    write_json(Path(cfg.paths.reports) / "data.json", stats)
    for split in SPLITS:
        n = stats["ner"][split]
        print(
            f"  ner/{split:5s}  {n['sentences']:6d} sentences in {n['sequences']:6d} sequences "
            f"{n['tokens']:7d} tokens {n['entities']:6d} entities"
        )
    for split in SPLITS:
        print(f"  translate/{split:5s}  {stats['translate'][split]['pairs']:6d} pairs")
