"""The NTM graph, as a real SageMaker NTM ``symbol.json`` builds it, in torch.

    x (word counts, CSR) ─ enc_0 FC(h0) [+BN] + act ─ enc_1 FC(h1) [+BN] + act ─ ┬ mean FC(k)     = μ
                                                                                 └ logsigma FC(k) = log σ
    z = relu(μ + σ·ε), ε ~ N(0, I)          projection FC(vocab) → log_softmax = log p(w | z)

Per document d with n_d words: recons_d = −Σ_w x_dw · log p(w | z), KL_d =
−½ Σ (1 + 2 log σ − μ² − σ²), both divided by n_d; empty documents (n_d = 0) contribute
nothing and are not counted. ``total_loss = KL + recons``.

The first layer reads the words as ``embedding_bag`` bags (indices, offsets, counts), for dense
and sparse minibatches alike: the cost follows the non-zeros, not the vocabulary, and a dense
and a sparse copy of the same rows go through the same arithmetic. The first layer and the
reconstruction loss, the two ends as wide as the vocabulary, have hand-written gradients
(:mod:`.sparse_ops`). The first layer's weight is held as (vocab, h0), the embedding-table
layout; :func:`to_arrays` writes every weight in MXNet's FullyConnected layout (out, in),
under MXNet-style names (``enc_0_weight``, ``mean_bias``, ``enc_1_bn_moving_var``...), so the
artifact can be mapped onto SageMaker's ``params``.

Batch norm (``batch_norm=true``) sits between each encoder FC and its activation, with MXNet's
BatchNorm defaults (eps 1e-3, momentum 0.9 ≙ torch's 0.1); a one-document minibatch uses the
running statistics, since a batch statistic of one row is undefined.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .sparse_ops import bags_times, multinomial_nll

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}
BN_EPS = 1e-3
BN_MOMENTUM = 0.1
# Initial log σ of every topic (the logsigma head's bias; its weights start Xavier as the rest):
# σ = e^-2 ≈ 0.14 keeps the first epochs' z close to relu(μ), so the noise does not drown the
# few topics' signal while the decoder is still random (Reuters: NPMI 0.12 -> 0.19 with the
# background bias below).
LOGSIGMA_BIAS = -2.0


class Bags:
    """A minibatch of documents as ``embedding_bag`` inputs (indices, offsets, counts), with
    the document of each (index, count) pair (``value_rows``), its position in the flattened
    (documents, vocabulary) matrix (``cells``), each document's word count n_d
    (``word_counts``) and 1 / n_d (``per_word``: 0 for an empty document), the number of
    non-empty documents (``documents``) and, on the CPU, the scipy CSR matrix they came from."""

    def __init__(self, indices: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor, value_rows: torch.Tensor,
                 cells: torch.Tensor, word_counts: torch.Tensor, per_word: torch.Tensor, documents: int,
                 csr: sp.csr_matrix | None = None) -> None:
        self.indices, self.offsets, self.counts = indices, offsets, counts
        self.value_rows, self.cells = value_rows, cells
        self.word_counts, self.per_word, self.documents = word_counts, per_word, documents
        self.csr = csr  # see sparse_ops.bags_times
        self.rows = len(offsets)


class NTMNetwork(nn.Module):
    def __init__(self, feature_dim: int, num_topics: int, encoder_layers: list[int], activation: str,
                 batch_norm: bool, generator: torch.Generator | None = None) -> None:
        super().__init__()
        widths = [feature_dim, *encoder_layers]
        self.activation = ACTIVATIONS[activation]
        self.enc_0_weight = nn.Parameter(_xavier((feature_dim, widths[1]), feature_dim, widths[1], generator))
        self.enc_0_bias = nn.Parameter(torch.zeros(widths[1]))
        self.hidden = nn.ModuleList(_linear(i, o, generator) for i, o in zip(widths[1:-1], widths[2:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(w, eps=BN_EPS, momentum=BN_MOMENTUM) for w in widths[1:]) \
            if batch_norm else None
        self.mean = _linear(widths[-1], num_topics, generator)
        self.logsigma = _linear(widths[-1], num_topics, generator)
        self.projection = _linear(num_topics, feature_dim, generator)
        with torch.no_grad():
            self.logsigma.bias.fill_(LOGSIGMA_BIAS)

    def start_from_background(self, word_counts: np.ndarray) -> None:
        """Set the decoder's bias to the log frequencies of the words in the training corpus
        (``word_counts``: total count of each word; one is added to each, so a word the corpus
        lacks gets a finite, low bias). With z = 0 the decoder then predicts the corpus's
        unigram distribution: the background is explained from the first step and the topics'
        weights only learn how a topic departs from it, instead of every topic first learning
        the common words (which makes their top words the same)."""
        counts = np.asarray(word_counts, dtype=np.float64) + 1.0
        log_frequencies = np.log(counts / counts.sum())
        with torch.no_grad():
            self.projection.bias.copy_(torch.from_numpy(log_frequencies))

    @property
    def num_topics(self) -> int:
        return self.mean.out_features

    def encode(self, bags: Bags) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ), each (documents, topics)."""
        h = bags_times(self.enc_0_weight, bags.indices, bags.offsets, bags.counts, bags.value_rows,
                       bags.csr) + self.enc_0_bias
        layers = [None, *self.hidden]
        for index, layer in enumerate(layers):
            if layer is not None:
                h = layer(h)
            if self.norms is not None:
                h = self._normalise(self.norms[index], h)
            h = self.activation(h)
        return self.mean(h), self.logsigma(h)

    @staticmethod
    def _normalise(norm: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
        if norm.training and h.shape[0] < 2:
            return F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return norm(h)

    def losses(self, bags: Bags, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-document (recons, KL), each divided by the document's word count (0 for empty
        documents). ``noise`` is ε; None evaluates at z = relu(μ) (no sampling)."""
        mu, logsigma = self.encode(bags)
        sigma = torch.exp(logsigma)
        h = mu if noise is None else torch.addcmul(mu, sigma, noise)
        recons = multinomial_nll(torch.relu(h), self.projection.weight, self.projection.bias, bags.value_rows,
                                 bags.cells, bags.counts, bags.word_counts)
        kl = (torch.addcmul(mu * mu, sigma, sigma) - 2 * logsigma - 1).sum(1)  # 2 KL
        return recons * bags.per_word, kl * (0.5 * bags.per_word)

    def topic_weights(self, bags: Bags) -> torch.Tensor:
        """The inference statistic: softmax over topics of relu(μ) (see the package docstring)."""
        mu, _ = self.encode(bags)
        return torch.softmax(torch.relu(mu), dim=1)

    # --- arrays in MXNet's names and layouts ---------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"enc_0_weight": self.enc_0_weight.detach().T}
        arrays.update((name, tensor.detach()) for name, tensor in self._named_tensors())
        return {name: t.cpu().numpy().astype(np.float32) for name, t in arrays.items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Fill the parameters from :meth:`to_arrays`' output (shapes must match)."""
        ours = self.to_arrays()
        missing = sorted(set(ours) - set(arrays))
        if missing:
            raise ValueError(f"the NTM model's arrays lack {missing}")
        for name, value in ours.items():
            if arrays[name].shape != value.shape:
                raise ValueError(f"NTM model array '{name}' has shape {arrays[name].shape}, expected {value.shape}")
        with torch.no_grad():
            self.enc_0_weight.copy_(torch.from_numpy(np.ascontiguousarray(arrays["enc_0_weight"].T)))
            for name, tensor in self._named_tensors():
                tensor.copy_(torch.from_numpy(np.asarray(arrays[name])))

    def _named_tensors(self):
        """Every tensor but enc_0's weight, by array name."""
        yield "enc_0_bias", self.enc_0_bias
        for index, layer in enumerate(self.hidden, start=1):
            yield f"enc_{index}_weight", layer.weight
            yield f"enc_{index}_bias", layer.bias
        for index, norm in enumerate(self.norms or ()):
            yield f"enc_{index}_bn_gamma", norm.weight
            yield f"enc_{index}_bn_beta", norm.bias
            yield f"enc_{index}_bn_moving_mean", norm.running_mean
            yield f"enc_{index}_bn_moving_var", norm.running_var
        for name in ("mean", "logsigma", "projection"):
            yield f"{name}_weight", getattr(self, name).weight
            yield f"{name}_bias", getattr(self, name).bias


def _xavier(shape: tuple[int, int], fan_in: int, fan_out: int, generator: torch.Generator | None) -> torch.Tensor:
    """Xavier (Glorot) uniform, MXNet's usual initializer for FullyConnected weights."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def _linear(fan_in: int, fan_out: int, generator: torch.Generator | None) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        layer.weight.copy_(_xavier((fan_out, fan_in), fan_in, fan_out, generator))
        layer.bias.zero_()
    return layer
