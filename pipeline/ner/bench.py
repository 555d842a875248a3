"""Training speed of the tagger on real batches (for `make bench`)."""

from pipeline.core.config import Config
from pipeline.core.trainer import timed_steps
from pipeline.ner import corpus, train
from pipeline.ner.features import NerFeatures


def bench_ner(cfg: Config) -> dict:
    hp = cfg.ner
    documents = corpus.load_ner_documents(cfg, "train")
    model, tags, _ = train.build_tagger(cfg)
    step = train.make_train_step(model, train.make_optimizer(hp), hp)
    features = NerFeatures(cfg)
    epoch, _ = train.epoch_batches(cfg, documents, tags, features, seed=hp.seed)
    speed = timed_steps(epoch, step, lambda b: int((b[0]["words"].numpy() != 0).sum()))
    return {
        "model": {
            k: getattr(hp, k)
            for k in ("units", "char_encoder", "output", "batch_size", "ensemble", "doc_memory", "lexicon", "gazetteer")
        },
        "train_words_per_s": speed["units_per_s"],
        # An ensemble's step trains every member on each word: this is the speed of one tagger's training.
        "train_member_words_per_s": speed["units_per_s"] * hp.ensemble,
        "train_steps_timed": speed["steps"],
    }
