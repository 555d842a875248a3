"""Config sections [lm.data] (the text) and [lm] (the character-level language model, its training and sampling)."""

from dataclasses import dataclass

from pipeline.core.options import average_opt, opt


@dataclass(frozen=True)
class LmData:
    """The text of the character-level language model: any UTF-8 file (an empty train = no LM task)."""

    train: str = opt(
        "", "training text (UTF-8, plain or .gz); empty = this config has no language-model task", path=True
    )
    valid: str = opt("", "validation text; empty = the last lm.data.valid_share of train's characters", path=True)
    test: str = opt(
        "", "test text; empty = none (the customary tiny-Shakespeare split has train and valid only)", path=True
    )
    max_chars: int = opt(
        0, "keep only the first N characters of train, before valid is held out (0 = all); for tiny configs"
    )
    valid_share: float = opt(0.1, "share of train's characters, from its end, held out as valid when no valid is given")


@dataclass(frozen=True)
class Lm:
    """Stages `train-lm` / `evaluate-lm` / `export-lm`: the character LSTM language model and its sampling."""

    seed: int = opt(1, "seed of initialisation, dropout and the evaluation samples")
    min_freq: int = opt(1, "characters seen fewer times than this in train map to <unk>")
    # Model: character embedding -> stacked LSTM (or GRU) -> softmax over characters (char-rnn).
    cell: str = opt("lstm", "recurrent cell", ("lstm", "gru"))
    layers: int = opt(2, "stacked recurrent layers")
    units: int = opt(256, "units per layer")
    embed_dim: int = opt(64, "character embedding width")
    dropout: float = opt(0.1, "dropout on the embeddings and after each recurrent layer (not recurrent: cuDNN stays)")
    # Training: truncated backpropagation through time over batch_size contiguous streams of the text.
    batch_size: int = opt(64, "contiguous streams the training text is cut into (one row of each batch)")
    bptt: int = opt(64, "characters per window; the state is carried from one window to the next within an epoch")
    learning_rate: float = opt(2e-3, "Adam learning rate")
    clip_norm: float = opt(5.0, "global gradient-norm clipping (0 = off)")
    epochs: int = opt(16, "maximum training epochs (one epoch = every training character once)")
    average_decay: float = average_opt(0.999, " (-0.017 nats/char on tiny Shakespeare's valid)")
    dev_streams: int = opt(
        16,
        "the per-epoch valid loss reads valid as this many contiguous streams side by side (fast; each starts from a "
        "zero state, so a little above evaluate-lm's one-stream loss, and ranks epochs alike)",
    )
    lr_decay: float = opt(0.5, "multiply the learning rate by this when valid loss does not improve")
    lr_patience: int = opt(0, "epochs without a better valid loss before the learning rate decays")
    patience: int = opt(3, "epochs without a better valid loss before training stops")
    max_minutes: float = opt(0, "wall-time budget: start no epoch that would end past it at the mean pace (0 = none)")
    # Sampling (pipeline generate, the evaluation samples and the exported `generate` signature).
    temperature: float = opt(0.8, "default sampling temperature (0 = greedy)")
    top_k: int = opt(0, "sample among the k likeliest characters only (0 = all)")
    max_generate: int = opt(10_000, "longest text one request may ask for, in characters")
    prompt_chars: int = opt(2_000, "a longer prompt keeps only its last prompt_chars characters (the state forgets)")
