"""``train``: two streamed passes over ``train``, the decomposition, the test metric."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io import DataError

from ..base import Params, TrainingContext, report_test_channel
from .decomposition import Whitening, alpha_from_second_moment, best_of_restarts, topics_from_components, whitening
from .inference import completion_log_likelihood
from .model import LDAModel
from .moments import CountBatch, SecondPass, SketchPass, random_test_matrix, sketch_columns

NAME = "lda"
EXTRA_TOPICS = 0.25  # the spec: 25 % more topics are computed, those with the largest alpha kept
ROWS_PER_STEP = 16384  # documents per moment update: each costs O(V·p) besides its words, so not too few


def whitening_rank(params: Params) -> int:
    """k' = ceil(1.25 num_topics), at most the vocabulary."""
    return min(params.feature_dim, math.ceil(params.num_topics * (1 + EXTRA_TOPICS)))


def _batches(params: Params, ctx: TrainingContext, channel: str, epoch: int) -> Iterator[CountBatch]:
    """The channel's documents as checked :class:`CountBatch` es of at most ``ROWS_PER_STEP``
    (a ``mini_batch_size`` of "the whole corpus", as the guide suggests, stays in bounded memory)."""
    record = 0
    size = min(params.mini_batch_size, ROWS_PER_STEP)
    for batch in ctx.channels.minibatches(channel, epoch, size, params.feature_dim):
        yield CountBatch(batch.features, record, channel, ctx.device)
        record += batch.size


def train(params: Params, ctx: TrainingContext) -> LDAModel:
    """Pass 0: M1 and the range sketch M2·Ω; pass 1: one subspace iteration M2·Q (skipped when
    the vocabulary is narrower than the sketch, which is then the identity); last pass: the
    third moment on the top-k' eigenvectors P of M2; then the decomposition."""
    started = time.perf_counter()
    rank = whitening_rank(params)
    columns = sketch_columns(rank, params.feature_dim)
    sketching = columns < params.feature_dim
    omega = random_test_matrix(params.feature_dim, columns if sketching else 0, ctx.seed, ctx.device)
    first = _stream(SketchPass(omega), params, ctx, epoch=0)
    _check_corpus(first.counts, params, ctx)
    if sketching:
        power = _stream(SketchPass(first.range_basis(params.alpha0)), params, ctx, epoch=1)
        basis = power.top_eigenvectors(params.alpha0, rank)
    else:
        basis = torch.eye(params.feature_dim, dtype=torch.float64, device=ctx.device)
    second = _stream(SecondPass(basis), params, ctx, epoch=2 if sketching else 1)
    passes = 3 if sketching else 2
    ctx.report.throughput(passes * first.counts.seen / max(time.perf_counter() - started, 1e-9))
    model = _decompose(first, second, params, ctx)
    ctx.report.progress(100.0)
    report_test_channel(ctx, lambda: _report_test(model, params, ctx))
    return model


def _stream(moments, params: Params, ctx: TrainingContext, epoch: int):
    """One pass of the train channel into ``moments`` (summed over hosts)."""
    for batch in _batches(params, ctx, "train", epoch):
        moments.add(batch)
    if ctx.distributed:
        moments.merge_hosts()
    return moments


def _check_corpus(counts, params: Params, ctx: TrainingContext) -> None:
    if counts.empty:
        ctx.report.info(f"skipped {counts.empty} empty document(s) of {counts.seen} in channel 'train' "
                        f"(no words: they carry no information about the topics)")
    if counts.m3 < params.num_topics:
        raise DataError(f"{counts.m3} document(s) have at least 3 words ({counts.seen} read, {counts.empty} empty), "
                        f"fewer than num_topics={params.num_topics}; the spectral method needs documents of 3 words "
                        f"or more, and more of them than topics", channel="train",
                        fix="Provide more (or longer) documents, or lower num_topics")


def _decompose(first: SketchPass, second: SecondPass, params: Params, ctx: TrainingContext) -> LDAModel:
    """Whiten, decompose, unwhiten; the num_topics components of largest alpha, refined.

    1. Whiten M2 at rank k' = ceil(1.25 num_topics), decompose the whitened M3 into k'
       components (best of ``max_restarts`` ALS runs), unwhiten to k' candidate topics, fit
       their α to M2 (:func:`alpha_from_second_moment`) and keep the num_topics largest: the
       spec's "25 % more, keep the largest alpha".
    2. The k' − num_topics noise directions of that whitening also bend the real components
       (measured on the synthetic corpus of the decomposition module: matched L1 of β 0.12
       against 0.087 for a rank-num_topics decomposition). So the kept topics start one more
       ALS on M3 whitened at rank num_topics (against ``max_restarts`` − 1 random starts; the
       smallest residual wins), and its components are the model's topics, α again fitted
       to M2."""
    alpha0, k = params.alpha0, params.num_topics
    counts, basis_tensor = first.counts, second.basis
    basis = basis_tensor.cpu().numpy()
    m1 = basis.T @ first.m1().cpu().numpy()
    e2 = second.projected_e2(counts, first.s2).cpu().numpy()
    m2 = e2 - (alpha0 / (alpha0 + 1)) * np.outer(m1, m1)

    def decompose(rank: int, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Whitening]:
        white = whitening(m2, rank)
        if white.rank < k:
            raise DataError(f"the word co-occurrences of the corpus support only {white.rank} topic(s) (the second "
                            f"moment has {white.rank} positive eigenvalue(s)), fewer than num_topics={k}",
                            channel="train", fix="Lower num_topics or provide more varied documents")
        whiten = white.whiten
        tensor = _whitened_m3(second, whiten, m1, e2, counts, alpha0)
        first_start = None if start is None else whiten.T @ (basis.T @ start.T)
        found = best_of_restarts(tensor, white.rank, params.max_restarts, params.max_iterations, params.tol,
                                 ctx.seed, first_start)
        ctx.report.info(f"ALS at rank {white.rank}: relative residual {found.residual:.4g} after "
                        f"{found.iterations} iteration(s)")
        _, vectors = found.symmetric(tensor)
        beta = topics_from_components(basis, white, vectors)
        return alpha_from_second_moment(beta, basis, m2, alpha0), beta, white

    alpha, beta, white = decompose(whitening_rank(params))
    kept = np.argsort(alpha)[::-1][:k]
    if white.rank > k:
        alpha, beta, _ = decompose(k, start=beta[kept])
        kept = np.argsort(alpha)[::-1]
    return LDAModel(alpha[kept], beta[kept])


def _whitened_m3(second: SecondPass, whiten: np.ndarray, m1: np.ndarray, e2: np.ndarray, counts,
                 alpha0: float) -> np.ndarray:
    """M3(W, W, W) = E3(W,W,W) − α0/(α0+2)·(E2⊗M1 + permutations) + 2α0²/((α0+1)(α0+2))·M1⊗M1⊗M1."""
    e3 = second.whitened_third(counts, torch.from_numpy(whiten).to(second.basis.device)).cpu().numpy()
    w1 = whiten.T @ m1
    w2 = whiten.T @ e2 @ whiten
    pairs = np.einsum("ab,c->abc", w2, w1)
    pairs = pairs + pairs.transpose(0, 2, 1) + pairs.transpose(2, 0, 1)
    cube = np.einsum("a,b,c->abc", w1, w1, w1)
    return e3 - alpha0 / (alpha0 + 2) * pairs + 2 * alpha0**2 / ((alpha0 + 1) * (alpha0 + 2)) * cube


def _report_test(model: LDAModel, params: Params, ctx: TrainingContext) -> None:
    """``test pwll``: document-completion per-word log-likelihood (see the package docstring)."""
    total, words = 0.0, 0.0
    for batch in ctx.channels.minibatches("test", 0, min(params.mini_batch_size, ROWS_PER_STEP), params.feature_dim):
        counts = sp.csr_matrix(batch.features, dtype=np.float64)
        log_likelihood, scored = completion_log_likelihood(counts, model.alpha, model.beta)
        total += log_likelihood
        words += scored
    if words:
        ctx.report.quality("test", "pwll", total / words, "score")
    else:
        ctx.report.info("the test channel holds no words to score: no test pwll")
