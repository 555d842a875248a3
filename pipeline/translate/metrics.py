"""Corpus BLEU and chrF with sacreBLEU on detokenized text; the signature is part of the result."""

# sacreBLEU's tokenizers for Japanese and Korean need MeCab; their text is scored by character instead.
CHARACTER_BLEU = ("ja", "ko", "th", "lo", "km", "my")


def bleu_scores(hypotheses: list[str], references: list[str], target_lang: str = "") -> dict:
    """sacreBLEU corpus BLEU and chrF on detokenized, cased text, with their signatures: 13a tokenization, or the
    one sacreBLEU picks for the target language (tok:zh for Chinese; by character for CHARACTER_BLEU), since a
    sentence without spaces is one 13a token and would score 0.

    >>> s = bleu_scores(["Ein Mann fährt Fahrrad ."], ["Ein Mann fährt Fahrrad ."])
    >>> round(s["bleu"], 2), s["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    (100.0, True)
    """
    import sacrebleu

    lang = target_lang.lower().replace("_", "-").split("-")[0]
    bleu = sacrebleu.metrics.BLEU(tokenize="char") if lang in CHARACTER_BLEU else sacrebleu.metrics.BLEU(trg_lang=lang)
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
