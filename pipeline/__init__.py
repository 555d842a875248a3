"""seq2seq-pipeline: a staged Keras 3 / TensorFlow NLP pipeline. See README.md (Layout) and pipeline/core/stages.py."""
