"""The peer's side of `make bench-peer`: OpenNMT-tf 2.32 trains its attentional RNN for a fixed number of steps.

    .venv-peer/bin/python tools/peer/opennmt_train.py RUN_DIR

Runs in .venv-peer (TensorFlow 2.13, tensorflow-addons, OpenNMT-tf 2.32), never in the project's venv, and imports
nothing from the project. RUN_DIR/run.json (written by pipeline/stages/bench_peer.py) holds the model's sizes and
OpenNMT-tf's run config, whose files (tokenized text, vocabularies) come from the project's own tokenization. This
script trains through OpenNMT-tf's own Runner and writes RUN_DIR/result.json: the real tokens/s that OpenNMT-tf's
Trainer reports (source tokens + target tokens with </s>, padding not counted) over the steps after the warm-up.
"""

import json
import logging
import sys
from pathlib import Path

# OpenNMT-tf's Trainer logs "Step = %d ; steps/s = %0.2f, tokens/s = %d (...)" every save_summary_steps steps,
# and the model's size once.
REPORT = "Step = %d ; steps/s"
PARAMETERS = "Number of model parameters: %d"


def make_model(spec: dict):
    """The peer's model at the project translator's size: embeddings, BiLSTM encoder (units per direction, the
    directions concatenated), a Dense bridge, an LSTM decoder with Luong (general) attention; tfa's AttentionWrapper
    feeds the attentional hidden state into the next step (input feeding)."""
    # Imported here, not at the top: the project's tests load this file's pure parts without the peer's packages.
    import opennmt
    import tensorflow as tf
    import tensorflow_addons as tfa

    return opennmt.models.SequenceToSequence(
        source_inputter=opennmt.inputters.WordEmbedder(spec["embedding_size"], dropout=spec["dropout"]),
        target_inputter=opennmt.inputters.WordEmbedder(spec["embedding_size"], dropout=spec["dropout"]),
        encoder=opennmt.encoders.RNNEncoder(
            num_layers=spec["encoder_layers"],
            num_units=spec["encoder_units"],
            bidirectional=True,
            dropout=spec["dropout"],
            reducer=opennmt.layers.ConcatReducer(),
            cell_class=tf.keras.layers.LSTMCell,
        ),
        decoder=opennmt.decoders.AttentionalRNNDecoder(
            num_layers=spec["decoder_layers"],
            num_units=spec["decoder_units"],
            bridge_class=opennmt.layers.DenseBridge,
            attention_mechanism_class=tfa.seq2seq.LuongAttention,
            cell_class=tf.keras.layers.LSTMCell,
            dropout=spec["dropout"],
        ),
    )


class Reports(logging.Handler):
    """Keeps the Trainer's throughput reports, (step, steps/s, tokens/s), and the parameter count, from the log
    records' own arguments (unrounded), not from formatted text."""

    def __init__(self):
        super().__init__()
        self.rows, self.parameters = [], None

    def emit(self, record):
        if record.msg == PARAMETERS:
            self.parameters = int(record.args[0])
        elif isinstance(record.msg, str) and record.msg.startswith(REPORT):
            step, steps_per_s, tokens_per_s = record.args[:3]
            self.rows.append((int(step), float(steps_per_s), float(tokens_per_s)))


def timed(rows, warmup: int, every: int) -> dict:
    """Tokens/s over the reports after the warm-up: each covers `every` steps, so its seconds are every / steps/s."""
    kept = [(every / steps_per_s, tokens_per_s) for step, steps_per_s, tokens_per_s in rows if step > warmup]
    if not kept:
        raise SystemExit(f"no throughput report after step {warmup}: reports {rows}")
    seconds = sum(s for s, _ in kept)
    tokens = sum(s * t for s, t in kept)
    return {"steps": every * len(kept), "seconds": round(seconds, 2), "units_per_s": round(tokens / seconds, 1)}


def main(run_dir: Path) -> None:
    import opennmt
    import tensorflow as tf
    import tensorflow_addons as tfa

    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    logger = tf.get_logger()
    logger.setLevel(logging.INFO)
    reports = Reports()
    logger.addHandler(reports)
    spec = run["model"]
    runner = opennmt.Runner(make_model(spec), run["opennmt"], auto_config=False)
    runner.train(num_devices=1)
    speed = timed(reports.rows, run["warmup"], run["opennmt"]["train"]["save_summary_steps"])
    result = {
        "train_tokens_per_s": speed["units_per_s"],
        "train_steps_timed": speed["steps"],
        "seconds": speed["seconds"],
        "parameters": reports.parameters,
        "versions": {
            "tensorflow": tf.__version__,
            "opennmt-tf": opennmt.__version__,
            "tensorflow-addons": tfa.__version__,
        },
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
