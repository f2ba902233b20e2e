"""A trained NTM: its arrays, and ``topic_weights`` per document for the server."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io.minibatch import Features

from ..tensors import embedding_bag_inputs
from .network import Bags, NTMNetwork


def bags_of(features: Features, device: torch.device) -> Bags:
    """A minibatch (dense or CSR) as the network's input."""
    csr = features if sp.issparse(features) else sp.csr_matrix(features)
    indices, offsets, counts = embedding_bag_inputs(csr, device)
    documents = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    cells = documents * csr.shape[1] + csr.indices
    word_counts = np.bincount(documents, weights=csr.data, minlength=csr.shape[0]).astype(np.float32)
    present = word_counts > 0
    per_word = np.divide(1.0, word_counts, out=np.zeros_like(word_counts), where=present)
    return Bags(indices, offsets, counts,
                *(torch.from_numpy(a).to(device) for a in (documents, cells, word_counts, per_word)),
                int(present.sum()), csr if device.type == "cpu" else None)


class NTMModel:
    """Wraps a trained :class:`NTMNetwork` (moved to the CPU, in evaluation mode)."""

    def __init__(self, network: NTMNetwork) -> None:
        self.network = network.cpu().eval()

    @property
    def feature_dim(self) -> int:
        return int(self.network.enc_0_weight.shape[0])

    @property
    def num_topics(self) -> int:
        return self.network.num_topics

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.network.to_arrays()

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> "NTMModel":
        """The layer widths, vocabulary size, topic count and batch norm are read from the
        arrays themselves (so a model loads whatever ``encoder_layers`` said); the activation,
        which no array holds, from the hyperparameters."""
        feature_dim = arrays["enc_0_weight"].shape[1]
        layers = [arrays[f"enc_{i}_weight"].shape[0] for i in range(_count_layers(arrays))]
        network = NTMNetwork(feature_dim, arrays["mean_weight"].shape[0], layers,
                             hyperparameters["encoder_layers_activation"], "enc_0_bn_gamma" in arrays)
        network.load_arrays(arrays)
        return cls(network)

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        with torch.no_grad():
            weights = self.network.topic_weights(bags_of(features, torch.device("cpu")))
        return {"topic_weights": weights.numpy()}

    def topic_word_weights(self) -> np.ndarray:
        """(vocabulary, topics): the decoder's ``projection_weight``."""
        return self.network.projection.weight.detach().numpy()


def _count_layers(arrays: dict[str, np.ndarray]) -> int:
    count = 0
    while f"enc_{count}_weight" in arrays:
        count += 1
    return count
