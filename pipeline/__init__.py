"""seq2seq-pipeline: a staged Keras 3 / TensorFlow NLP pipeline. See README.md and pipeline/stages.py."""
