"""Models as short compositions of named Keras layers."""
