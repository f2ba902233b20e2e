"""One module per algorithm: pure torch/numpy on minibatches, no paths, no config files."""
