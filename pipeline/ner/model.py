"""The BiLSTM-CNN-CRF tagger (Ma & Hovy 2016; Lample et al. 2016 with `char_encoder = "lstm"`).

    word embedding (pretrained)    ┐
    char CNN / char BiLSTM         │
    casing embedding (optional)    ├ concat -> dropout -> (BiLSTM -> [+ memory]) xN -> dropout -> Dense -> CRF / softmax
    word statistics (optional)     │    (lexicon: fixed capitalisation prior and frequency, Brown cluster embeddings)
    name lists (optional)          ┘    (gazetteer: places, first names, surnames)

The optional document memory (`doc_memory`) appends to each capitalised word's BiLSTM state the mean state of
its other mentions in the same document (`TaggerNet.memory`), so a name can borrow the context of a sentence
where it is plain. Inputs are the dicts of `pipeline.NerFeatures`. The recurrent layers keep cuDNN-eligible
settings (tanh/sigmoid, no recurrent dropout, no unrolling, with biases) and get a right-padded mask,
so they run the fused cuDNN kernels on a GPU.
"""

import keras
import numpy as np
import tensorflow as tf

from pipeline.core.vocab import UNK_ID
from pipeline.ner.config import Ner
from pipeline.ner.crf import CRF, iob2_penalties, path_targets, posteriors, viterbi_decode
from pipeline.ner.features import CASES

CLUSTER_DIM, PREFIX_DIM = 25, 10  # widths of the Brown cluster and cluster-prefix embeddings (lexicon)


def _rnn(kind: str, units: int, return_sequences: bool, name: str) -> keras.layers.Layer:
    cell = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]
    return keras.layers.Bidirectional(cell(units, return_sequences=return_sequences), name=name)


class CharCNN(keras.layers.Layer):
    """[batch, time, chars, dim] -> [batch, time, filters]: convolution, then max over the real characters."""

    def __init__(self, filters: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv1D(filters, width, padding="same", name="conv")

    def call(self, x, char_mask):
        b, t, w = tf.unstack(tf.shape(x)[:3])
        h = self.conv(tf.reshape(x, [b * t, w, x.shape[-1]]))
        h = tf.reshape(h, [b, t, w, h.shape[-1]])
        # Masking the max keeps a word's features independent of how far its characters were padded.
        h = tf.reduce_max(tf.where(char_mask[..., None], h, -1e9), axis=2)
        return tf.where(tf.reduce_any(char_mask, axis=2)[..., None], h, 0.0)


class CharBiLSTM(keras.layers.Layer):
    """[batch, time, chars, dim] -> [batch, time, 2 * units]: last states of a BiLSTM over each word."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.rnn = _rnn("lstm", units, return_sequences=False, name="rnn")

    def call(self, x, char_mask):
        b, t, w = tf.unstack(tf.shape(x)[:3])
        mask = tf.reshape(char_mask, [b * t, w])
        # cuDNN rejects fully masked rows, and padding words have no characters: let them keep one.
        mask = tf.logical_or(mask, tf.range(w)[None] == 0)
        h = self.rnn(tf.reshape(x, [b * t, w, x.shape[-1]]), mask=mask)
        return tf.reshape(h, [b, t, h.shape[-1]])


class TaggerNet(keras.layers.Layer):
    """One tagger network: features -> emission scores, and its own CRF."""

    def __init__(
        self,
        hp: Ner,
        embeddings: np.ndarray,
        n_chars: int,
        n_tags: int,
        seed: int,
        lexicon: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hp, self.n_tags = hp, n_tags
        n_words, dim = embeddings.shape
        self.word_emb = keras.layers.Embedding(
            n_words,
            dim,
            embeddings_initializer=keras.initializers.Constant(embeddings),
            trainable=not hp.freeze_embeddings,
            name="word_emb",
        )
        # A fixed copy of the pretrained rows, read in training only (see `call`). A constant, not a variable: it
        # stays out of the weights files and the exported SavedModel, whose graphs never read it.
        # convert_to_tensor passes a tensor through, so members of one Tagger share its single copy.
        use = hp.pretrained_dropout > 0 and not hp.freeze_embeddings
        self.pretrained = tf.convert_to_tensor(embeddings) if use else None
        self.char_emb = keras.layers.Embedding(n_chars, hp.char_dim, name="char_emb")
        if hp.char_encoder == "cnn":
            self.char_enc = CharCNN(hp.char_filters, hp.char_width, name="char_cnn")
        else:
            self.char_enc = CharBiLSTM(hp.char_filters, name="char_lstm")
        self.case_emb = keras.layers.Embedding(len(CASES), len(CASES), name="case_emb") if hp.casing else None
        self.lexicon = None
        if hp.lexicon or hp.gazetteer:
            if lexicon is None:
                raise ValueError("ner.lexicon/gazetteer need the word statistics: pass pipeline.lexicon.load(cfg)")
            # Constants, like the vocabulary: rebuilt from ner_lexicon.npz, baked into the exported graphs.
            keys = (["dense", "cluster", "prefix"] if hp.lexicon else []) + (["gazetteer"] if hp.gazetteer else [])
            self.lexicon = {k: tf.convert_to_tensor(lexicon[k]) for k in keys}
        if hp.lexicon:
            n_clusters, n_prefixes = (int(n) for n in lexicon["sizes"])
            self.cluster_emb = keras.layers.Embedding(n_clusters, CLUSTER_DIM, name="cluster_emb")
            self.prefix_emb = keras.layers.Embedding(n_prefixes, PREFIX_DIM, name="prefix_emb")
        self.dropout = keras.layers.Dropout(hp.dropout, name="dropout")
        self.encoder = [_rnn(hp.rnn, hp.units, return_sequences=True, name=f"bi{hp.rnn}_{i}") for i in range(hp.layers)]
        self.emit = keras.layers.Dense(n_tags, name="emit")
        self.crf = CRF(n_tags, name="crf") if hp.output == "crf" else None
        self.seeds = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        # Every sub-layer builds itself on the first call; this only stops Keras warning that we did not.
        self.built = True

    def memory(self, h, key, doc):
        """[batch, time, units + 1]: the mean state of each keyed word's other mentions in its document, and
        whether it has any (key 0: no memory). Only keyed tokens (capitalised words) enter the product."""
        b, t, d = tf.shape(h)[0], tf.shape(h)[1], h.shape[-1]
        flat_key = tf.reshape(key, [-1])
        flat_doc = tf.reshape(tf.broadcast_to(doc[:, None], [b, t]), [-1])
        sel = tf.where(flat_key > 0)[:, 0]
        states = tf.gather(tf.reshape(h, [b * t, d]), sel)
        k, dd = tf.gather(flat_key, sel), tf.gather(flat_doc, sel)
        same = (k[:, None] == k[None, :]) & (dd[:, None] == dd[None, :])
        same = tf.cast(same & ~tf.eye(tf.shape(sel)[0], dtype=tf.bool), h.dtype)
        count = tf.reduce_sum(same, axis=1, keepdims=True)
        mem = tf.concat([tf.matmul(same, states) / tf.maximum(count, 1.0), tf.cast(count > 0, h.dtype)], axis=-1)
        return tf.reshape(tf.scatter_nd(sel[:, None], mem, tf.cast(tf.stack([b * t, d + 1]), tf.int64)), [b, t, d + 1])

    def call(self, inputs, training=False):
        """Emission scores [batch, time, tags]."""
        words, chars = inputs["words"], inputs["chars"]
        mask = words != 0
        if training and self.hp.word_dropout > 0:
            drop = keras.random.uniform(tf.shape(words), seed=self.seeds) < self.hp.word_dropout
            words = tf.where(drop & mask, UNK_ID, words)
        x = [self.word_emb(words), self.char_enc(self.char_emb(chars), chars != 0)]
        if training and self.pretrained is not None:
            # Valid/test words outside the train vocabulary keep their pretrained rows while train words drift;
            # showing train words in their pretrained form too teaches the encoder to read that space.
            drop = keras.random.uniform(tf.shape(words), seed=self.seeds) < self.hp.pretrained_dropout
            x[0] = tf.where(drop[..., None], tf.gather(self.pretrained, words), x[0])
        if self.case_emb is not None:
            x.append(self.case_emb(inputs["casing"]))
        if self.lexicon is not None:  # of `words` after word dropout: a word read as <unk> has no statistics
            ids = tf.cast(words, tf.int32)  # Keras traces a default signature with float inputs
            if self.hp.lexicon:
                x.append(tf.gather(self.lexicon["dense"], ids))
                x.append(self.cluster_emb(tf.gather(self.lexicon["cluster"], ids)))
                x.append(self.prefix_emb(tf.gather(self.lexicon["prefix"], ids)))
            if self.hp.gazetteer:
                x.append(tf.gather(self.lexicon["gazetteer"], ids))
        x = tf.concat(x, axis=-1)
        keep = None  # the sentences that read the memory in training, drawn once for all layers
        if self.hp.doc_memory and training and self.hp.doc_memory_dropout > 0:
            keep = keras.random.uniform(tf.shape(words)[:1], seed=self.seeds) >= self.hp.doc_memory_dropout
        for rnn in self.encoder:
            x = rnn(self.dropout(x, training=training), mask=mask, training=training)
            if self.hp.doc_memory:
                # After every layer: a second layer reads the first one's memory in context, so the borrowed
                # evidence spreads to a name's neighbours (multi-word names, "X 's chairman") before the output.
                memory = self.memory(x, inputs["key"], inputs["doc"])
                if keep is not None:
                    memory = tf.where(keep[:, None, None], memory, 0.0)
                x = tf.concat([x, memory], axis=-1)
        return self.emit(self.dropout(x, training=training))

    def sentence_losses(self, inputs, tags, training=False, teacher=None) -> tf.Tensor:
        """[batch] negative log-likelihood (CRF) or summed token cross-entropy of each sentence.

        teacher: a teacher's (marginals, transition counts) of these sentences (`Tagger.posteriors`); the target
        is then ner.distill_weight of the teacher's path distribution and the rest the gold path."""
        emissions = tf.cast(self(inputs, training=training), tf.float32)
        mask = inputs["words"] != 0
        if teacher is None:
            if self.crf is not None:
                return self.crf.loss(emissions, tags, mask)
            xent = keras.losses.sparse_categorical_crossentropy(tags, emissions, from_logits=True)
            return tf.reduce_sum(tf.where(mask, xent, 0.0), axis=1)
        w = self.hp.distill_weight
        gold = path_targets(tags, mask, self.n_tags)
        unary, pairs = ((1 - w) * g + w * t for g, t in zip(gold, teacher, strict=True))
        if self.crf is not None:
            return self.crf.soft_loss(emissions, unary, pairs, mask)
        return -tf.reduce_sum(unary * tf.nn.log_softmax(emissions), axis=[1, 2])

    def recurrent_layers(self) -> list[keras.layers.Layer]:
        bis = [*self.encoder, *([self.char_enc.rnn] if isinstance(self.char_enc, CharBiLSTM) else [])]
        return [rnn for bi in bis for rnn in (bi.forward_layer, bi.backward_layer)]


class Tagger(keras.Model):
    """`ner.ensemble` networks with their own initialisation, dropout and CRF, trained side by side on the same
    batches, each on its own likelihood. Decoding averages their emission and CRF scores (a product of experts),
    so one Viterbi pass tags a batch; with ensemble = 1 this is the single BiLSTM-CNN-CRF. Given the tag names,
    Viterbi keeps to valid IOB2 paths (`crf.iob2_penalties`)."""

    def __init__(
        self,
        hp: Ner,
        embeddings: np.ndarray,
        n_chars: int,
        n_tags: int,
        lexicon: dict | None = None,
        tags: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hp, self.n_tags = hp, n_tags
        self.penalties = [tf.constant(p) for p in iob2_penalties(tags)] if tags else None
        # Tensors made once here and shared by the members: each member's own constants would put a copy per member
        # of the statistics in the exported graphs and of the pretrained matrix in memory.
        embeddings = tf.convert_to_tensor(embeddings)
        if lexicon is not None:
            lexicon = {k: tf.convert_to_tensor(v) for k, v in lexicon.items()}
        self.members = [
            TaggerNet(hp, embeddings, n_chars, n_tags, hp.seed + i, lexicon, name=f"member_{i}")
            for i in range(hp.ensemble)
        ]

    def build(self, input_shape=None):
        self.built = True  # members build themselves on the first call

    def call(self, inputs, training=False):
        """Emission scores [batch, time, tags], averaged over the members."""
        return tf.add_n([m(inputs, training=training) for m in self.members]) / len(self.members)

    def sentence_losses(self, inputs, tags, training=False, teacher=None) -> tf.Tensor:
        """[batch] the members' losses of each sentence, summed: each member's gradient is that of its own loss."""
        return tf.add_n([m.sentence_losses(inputs, tags, training, teacher) for m in self.members])

    def variable_groups(self) -> list[list]:
        """Trainable variables member by member (each member's gradients are clipped on their own)."""
        return [m.trainable_variables for m in self.members]

    def crf_params(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(transitions, start, end) of decoding: the members' mean, kept to valid IOB2 paths."""
        per_member = [m.crf.params() for m in self.members]
        transitions, start, end = [tf.add_n(list(p)) / len(self.members) for p in zip(*per_member, strict=True)]
        if self.penalties is not None:
            transitions, start = transitions + self.penalties[0], start + self.penalties[1]
        return transitions, start, end

    def decode(self, inputs) -> tf.Tensor:
        """Best tag ids [batch, time] int32, 0 on padding."""
        emissions = tf.cast(self(inputs, training=False), tf.float32)
        mask = inputs["words"] != 0
        if self.hp.output == "crf":
            return viterbi_decode(emissions, mask, *self.crf_params())[0]
        return tf.where(mask, tf.argmax(emissions, axis=-1, output_type=tf.int32), 0)

    def posteriors(self, inputs, temperature: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
        """The distribution over tag paths that decoding takes the best of, every score divided by temperature,
        as tag marginals [batch, time, tags] and expected transition counts [batch, tags, tags] (a teacher's
        targets for distillation)."""
        emissions = tf.cast(self(inputs, training=False), tf.float32) / temperature
        mask = inputs["words"] != 0
        if self.hp.output == "crf":
            return posteriors(emissions, mask, *(p / temperature for p in self.crf_params()))
        # Independent tokens: the marginal of a transition is the product of its two tags' marginals.
        unary = tf.nn.softmax(emissions) * tf.cast(mask, tf.float32)[..., None]
        return unary, tf.einsum("bti,btj->bij", unary[:, :-1], unary[:, 1:])

    def recurrent_layers(self) -> list[keras.layers.Layer]:
        """Every LSTM/GRU in the model (for the cuDNN-eligibility test)."""
        return [rnn for m in self.members for rnn in m.recurrent_layers()]


def dummy_inputs(max_word_length: int) -> dict[str, tf.Tensor]:
    """A one-token batch that builds every layer's weights (before restoring a checkpoint)."""
    return {
        "words": tf.ones([1, 1], tf.int32),
        "chars": tf.ones([1, 1, max_word_length], tf.int32),
        "casing": tf.ones([1, 1], tf.int32),
        "key": tf.ones([1, 1], tf.int32),
        "doc": tf.zeros([1], tf.int32),
    }


def build(hp: Ner, matrix: np.ndarray, n_chars: int, tags: list[str], lexicon: dict | None) -> Tagger:
    """The one builder of the tagger (training, prediction, export, bench, tests), every weight built.

    matrix: the word embedding rows (pretrained values for training; any array of the trained shape before
    loading weights); lexicon: lexicon.for_tagger's constant tables, or None.
    """
    model = Tagger(hp, matrix, n_chars, len(tags), lexicon, tags)
    model(dummy_inputs(hp.max_word_length))
    return model
