"""The two ends of the NTM graph that touch the vocabulary, with hand-written gradients.

Both take a minibatch of documents as CSR triples (each non-zero's document ``value_rows``, word
``indices``, or for the loss its ``cells`` in the flattened (documents, vocabulary) matrix, and
``counts``) and cost O(non-zeros) where autograd's versions cost O(documents x vocabulary) or a
sort:

- :func:`bags_times` is ``x @ W`` for the encoder's first layer (``embedding_bag`` forward, as
  before). Its weight gradient ``x^T @ g`` is one ``index_add_`` of the non-zeros' rows of g;
  autograd's ``embedding_bag`` backward sorts the indices first (a third of a Reuters step's
  backward on the CPU).
- :func:`multinomial_nll` is the reconstruction loss ``-sum_w x_dw log softmax(z W^T + b)_w``
  per document. Its gradient with respect to the logits is ``n_d softmax - x_d`` (n_d = the
  document's word count): the softmax kept from the forward pass, scaled per row, minus the
  counts at the non-zeros. Autograd instead back-propagates through the gather, a dense zero
  tensor and ``log_softmax``'s backward, three more passes over documents x vocabulary.

``tests/algorithms/test_ntm.py`` checks both against autograd's gradients of the plain formulas.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class _BagsTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, indices, offsets, counts, value_rows, csr):
        ctx.save_for_backward(indices, counts, value_rows)
        ctx.weight_shape, ctx.csr = weight.shape, csr
        return F.embedding_bag(indices, weight, offsets, mode="sum", per_sample_weights=counts)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if ctx.csr is not None:
            return torch.from_numpy(np.asarray(ctx.csr.T @ grad.numpy())), None, None, None, None, None
        indices, counts, value_rows = ctx.saved_tensors
        contributions = grad.index_select(0, value_rows).mul_(counts.unsqueeze(1))
        grad_weight = grad.new_zeros(ctx.weight_shape).index_add_(0, indices, contributions)
        return grad_weight, None, None, None, None, None


def bags_times(weight: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor,
               value_rows: torch.Tensor, csr: sp.csr_matrix | None = None) -> torch.Tensor:
    """(documents, width): each document's counts times the rows of ``weight`` (vocab, width) of
    its words; differentiable in ``weight`` only. On the CPU, pass the minibatch's scipy ``csr``
    as well: scipy's sparse-transpose product computes the weight gradient ~2x faster than
    torch's ``index_add_`` (160 against 370 µs for a Reuters minibatch of 64)."""
    return _BagsTimes.apply(weight, indices, offsets, counts, value_rows, csr)


class _MultinomialNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weight, bias, value_rows, cells, counts, word_counts):
        logits = torch.addmm(bias, z, weight.t())
        # The non-zeros' logits, taken from the flattened matrix: a 1-d index_select is ~5x
        # faster than indexing by (row, word) pairs (15 against 72 µs for a Reuters minibatch).
        picked = logits.view(-1).index_select(0, cells)
        probabilities = torch.softmax(logits, dim=1)
        # log-sum-exp of each row from the softmax: its largest probability belongs to the
        # largest logit, p_max = exp(max - lse), and p_max >= 1 / vocabulary cannot underflow.
        # (torch's softmax plus two max passes costs about half of log_softmax plus exp.)
        log_normaliser = logits.amax(1) - probabilities.amax(1).log()
        nll = torch.zeros(len(z), dtype=z.dtype, device=z.device).index_add_(0, value_rows, picked.mul_(counts))
        nll = word_counts * log_normaliser - nll
        if any(ctx.needs_input_grad[:3]):
            ctx.save_for_backward(z, weight, value_rows, cells, counts, word_counts)
            # Not saved with save_for_backward: backward turns it into the logits' gradient in
            # place (one pass less), so it can serve one backward only.
            ctx.probabilities = probabilities
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        z, weight, value_rows, cells, counts, word_counts = ctx.saved_tensors
        if ctx.probabilities is None:
            raise RuntimeError("multinomial_nll's backward runs once per forward (retain_graph is not supported)")
        grad_logits, ctx.probabilities = ctx.probabilities, None
        grad_logits.mul_((grad * word_counts).unsqueeze(1))
        grad_logits.view(-1).index_add_(0, cells, -(counts * grad[value_rows]))
        grad_z = grad_logits @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad_logits.t() @ z if ctx.needs_input_grad[1] else None
        grad_bias = grad_logits.sum(0) if ctx.needs_input_grad[2] else None
        return grad_z, grad_weight, grad_bias, None, None, None, None


def multinomial_nll(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, value_rows: torch.Tensor,
                    cells: torch.Tensor, counts: torch.Tensor, word_counts: torch.Tensor) -> torch.Tensor:
    """(documents,): ``-sum_w counts_dw * log softmax(z @ weight.T + bias)_dw`` over each
    document's non-zeros, given as their documents ``value_rows`` and their ``cells``
    (document x vocabulary + word: positions in the flattened (documents, vocabulary)
    matrix); ``word_counts`` must hold each document's sum of ``counts``."""
    return _MultinomialNLL.apply(z, weight, bias, value_rows, cells, counts, word_counts)
