"""Corpus BLEU and chrF with sacreBLEU on detokenized text; the signature is part of the result."""


def bleu_scores(hypotheses: list[str], references: list[str]) -> dict:
    """sacreBLEU corpus BLEU and chrF on detokenized, cased text, with their signatures (13a tokenization).

    >>> s = bleu_scores(["Ein Mann fährt Fahrrad ."], ["Ein Mann fährt Fahrrad ."])
    >>> round(s["bleu"], 2), s["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    (100.0, True)
    """
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": b.score,
        "chrf": c.score,
        "bp": b.bp,
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(hypotheses),
    }
