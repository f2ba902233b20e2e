"""``train``: one streamed pass over ``train`` (two more only for a corpus whose start does not
look like the rest), the decomposition, the test metric."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io import DataError

from ..base import Params, TrainingContext, report_test_channel
from ..collectives import all_reduce
from . import refinement
from .decomposition import Whitening, alpha_from_second_moment, best_of_restarts, topics_from_components, whitening
from .inference import completion_log_likelihood
from .model import LDAModel
from .moments import CountBatch, ProjectedPass, SketchPass, random_test_matrix, sketch_columns

NAME = "lda"
EXTRA_TOPICS = 0.25  # the spec: 25 % more topics are computed, those with the largest alpha kept
ROWS_PER_STEP = 16384  # documents per moment update: each costs O(V·p) besides its words, so not too few
SAMPLE_ENTRIES = 4_000_000  # (document, word) entries held to choose the basis: about 48 MB
# Power steps of the range finder on the held sample (in memory, no re-reading). At 200,000
# documents (V = 50,000, 20 topics): matched L1 of β 0.151 with 2 or 3; with 1 the basis missed
# enough of M2 to fall back to streamed passes (twice the time).
SUBSPACE_ITERATIONS = 2
# Fall back to streamed passes when M2's mass outside the sample's basis exceeds this many times
# the weakest topic's eigenvalue. Measured: a shuffled corpus of 1,000,000 documents (V = 50,000,
# 20 topics, basis from its first 44,000) 1.7x, with the same recovery as the streamed basis
# (matched L1 0.070 both); half the topics absent from the sample (the test) about 900x. A
# single weak topic absent from the first documents can stay below it: shuffle such corpora.
MISSING_SHARE = 4.0


def whitening_rank(params: Params) -> int:
    """k' = ceil(1.25 num_topics), at most the vocabulary."""
    return min(params.feature_dim, math.ceil(params.num_topics * (1 + EXTRA_TOPICS)))


def _batches(params: Params, ctx: TrainingContext, channel: str, epoch: int) -> Iterator[CountBatch]:
    """The channel's documents as checked :class:`CountBatch` es of at most ``ROWS_PER_STEP``
    (a ``mini_batch_size`` of "the whole corpus", as the guide suggests, stays in bounded memory)."""
    record = 0
    size = min(params.mini_batch_size, ROWS_PER_STEP)
    for batch in ctx.channels.minibatches(channel, epoch, size, params.feature_dim):
        yield CountBatch.checked(batch.features, record, channel, ctx.device)
        record += batch.size


def _take_sample(batches: Iterator[CountBatch], entries: int) -> tuple[list[CountBatch], Iterator[CountBatch]]:
    """The first documents holding up to ``entries`` stored counts (cut at the same document
    whatever the minibatch size), and the rest of the stream (the cut minibatch's tail first)."""
    sample, held = [], 0
    for batch in batches:
        room = entries - held
        if batch.csr.nnz <= room:
            sample.append(batch)
            held += batch.csr.nnz
            continue
        cut = int(np.searchsorted(batch.csr.indptr, room, side="right")) - 1  # whole documents that fit
        head, tail = batch.split(cut)
        if head.rows:
            sample.append(head)
        return sample, itertools.chain([tail], batches)
    return sample, iter(())


def train(params: Params, ctx: TrainingContext) -> LDAModel:
    """One pass: the basis P from the first documents (held in memory, :func:`_sample_basis`),
    then every document's moments projected on P (:class:`ProjectedPass`), then the
    decomposition. When the whole corpus fits in the sample, P is M2's top-k' eigenspace
    itself. Otherwise, if M2 of the whole corpus has more mass outside P than half its
    weakest topic's eigenvalue (a corpus ordered by topic, whose first documents miss some),
    the basis is found again by the streamed range finder (:func:`_streamed_basis`, two passes)
    and the moments projected in a fourth. Last, β is refined by variational EM over the first
    held documents (:func:`_refine`)."""
    started = time.perf_counter()
    rank = whitening_rank(params)
    sample, rest = _take_sample(_batches(params, ctx, "train", 0), SAMPLE_ENTRIES)
    basis, sampled = _sample_basis(sample, rank, params, ctx)
    moments = ProjectedPass(basis)
    tokens = 0.0
    for batch in itertools.chain(sample, rest):
        moments.add(batch)
        tokens += float(batch.length.sum())
    if ctx.distributed:
        moments.merge_hosts()
        tokens = float(all_reduce([np.array([tokens])], ctx.device)[0][0])
    _check_corpus(moments.counts, params, ctx)
    passes = 1
    if sampled < moments.counts.seen and _basis_misses_topics(moments, params, ctx):
        moments = _stream(ProjectedPass(_streamed_basis(rank, params, ctx)), params, ctx, epoch=3)
        passes = 4
    ctx.report.throughput(passes * moments.counts.seen / max(time.perf_counter() - started, 1e-9))
    spectral = _decompose(moments, params, ctx)
    del moments
    model = _refine(spectral, sample, tokens, ctx)
    ctx.report.progress(100.0)
    report_test_channel(ctx, lambda: _report_test(model, params, ctx))
    return model


def _refine(spectral: LDAModel, sample: list[CountBatch], tokens: float, ctx: TrainingContext) -> LDAModel:
    """The spectral model's β refined by variational EM over the first held documents
    (:mod:`.refinement`); the spectral model itself when they are too small a share of the corpus."""
    started = time.perf_counter()
    blocks = refinement.document_blocks([batch.csr for batch in sample])
    sample.clear()  # the blocks are copies: the sample's batches can go
    beta = refinement.refine(spectral, blocks, tokens, ctx.distributed, ctx.device)
    if beta is None:
        ctx.report.info(f"kept the spectral topics: the {sum(b.shape[0] for b in blocks)} document(s) that EM "
                        f"would refine hold less than {refinement.MIN_SHARE:.0%} of the corpus's tokens")
        return spectral
    ctx.report.info(f"refined the spectral topics by {refinement.PASSES} variational EM passes over "
                    f"{sum(b.shape[0] for b in blocks)} document(s) in {time.perf_counter() - started:.2f} s")
    return LDAModel(spectral.alpha, beta)


def _sample_basis(sample: list[CountBatch], rank: int, params: Params, ctx: TrainingContext) -> tuple[torch.Tensor, int]:
    """(P, documents sampled on all hosts): the top-k' eigenvectors of the sample's M2 by the
    randomised range finder with ``SUBSPACE_ITERATIONS`` power steps, each a pass over the
    held sample (all hosts' samples together: the same P everywhere). The identity when the
    vocabulary is no wider than the range finder.

    Why power steps: M2's estimate has a flat noise tail over the whole vocabulary whose total
    weight is comparable to the weakest topic's eigenvalue, so the range finder's one-step
    basis is bent by it (matched L1 of β 0.15-0.26 depending on the seed on a 20,000-document
    corpus, V = 1,000, 20 topics, against 0.073 with the exact eigenvectors)."""
    columns = sketch_columns(rank, params.feature_dim)
    test_matrix = random_test_matrix(params.feature_dim, columns if columns < params.feature_dim else 0,
                                     ctx.seed, ctx.device)
    for step in range(SUBSPACE_ITERATIONS + 1):
        sketch = SketchPass(test_matrix)
        for batch in sample:
            sketch.add(batch)
        if ctx.distributed:
            sketch.merge_hosts()
        if columns >= params.feature_dim:
            return torch.eye(params.feature_dim, dtype=torch.float64, device=ctx.device), sketch.counts.seen
        if sketch.counts.m2 == 0:  # no document of 2 words yet: any basis; the final checks decide
            return torch.linalg.qr(test_matrix.double())[0][:, :rank], sketch.counts.seen
        if step < SUBSPACE_ITERATIONS:
            test_matrix = sketch.range_basis(params.alpha0)
    return sketch.top_eigenvectors(params.alpha0, rank), sketch.counts.seen


def _basis_misses_topics(moments: ProjectedPass, params: Params, ctx: TrainingContext) -> bool:
    """Whether tr M2 − tr PᵀM2P (M2's mass outside P, whole corpus) exceeds ``MISSING_SHARE``
    of PᵀM2P's num_topics-th eigenvalue (the weakest topic kept)."""
    projected = _projected_m2(moments, params.alpha0)
    eigenvalues = np.sort(np.linalg.eigvalsh(projected))[::-1]
    weakest = eigenvalues[min(params.num_topics, len(eigenvalues)) - 1]
    missing = moments.m2_trace(params.alpha0) - float(np.trace(projected))
    ctx.report.info(f"second moment outside the sample's basis: {missing:.4g} (weakest topic's eigenvalue "
                    f"{weakest:.4g})")
    if missing <= MISSING_SHARE * weakest:
        return False
    ctx.report.info("the first documents do not span the corpus's topics (is the channel ordered?): finding the "
                    "basis by two more passes over the channel")
    return True


def _streamed_basis(rank: int, params: Params, ctx: TrainingContext) -> torch.Tensor:
    """P from the whole channel: the range sketch M2·Ω (epoch 1), one power step (epoch 2)."""
    columns = sketch_columns(rank, params.feature_dim)
    first = _stream(SketchPass(random_test_matrix(params.feature_dim, columns, ctx.seed, ctx.device)),
                    params, ctx, epoch=1)
    power = _stream(SketchPass(first.range_basis(params.alpha0)), params, ctx, epoch=2)
    return power.top_eigenvectors(params.alpha0, rank)


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


def _projected_m2(moments: ProjectedPass, alpha0: float) -> np.ndarray:
    m1 = (moments.basis.T @ moments.m1()).cpu().numpy()
    return moments.projected_e2().cpu().numpy() - (alpha0 / (alpha0 + 1)) * np.outer(m1, m1)


def _decompose(moments: ProjectedPass, params: Params, ctx: TrainingContext) -> LDAModel:
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
    basis = moments.basis.cpu().numpy()
    m1 = basis.T @ moments.m1().cpu().numpy()
    e2 = moments.projected_e2().cpu().numpy()
    m2 = e2 - (alpha0 / (alpha0 + 1)) * np.outer(m1, m1)
    m2_basis = moments.m2_times_basis(alpha0).cpu().numpy()
    widest = whitening(m2, whitening_rank(params))
    if widest.rank < k:
        raise DataError(f"the word co-occurrences of the corpus support only {widest.rank} topic(s) (the second "
                        f"moment has {widest.rank} positive eigenvalue(s)), fewer than num_topics={k}",
                        channel="train", fix="Lower num_topics or provide more varied documents")
    # A narrower whitening keeps the leading eigenpairs, so its M3 is a corner of the widest one's.
    widest_tensor = _whitened_m3(moments, widest.whiten, m1, e2, alpha0)

    def decompose(rank: int, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Whitening]:
        white = Whitening(widest.vectors[:, :rank], widest.eigenvalues[:rank])
        whiten = white.whiten
        tensor = np.ascontiguousarray(widest_tensor[:rank, :rank, :rank])
        first_start = None if start is None else whiten.T @ (basis.T @ start.T)
        found = best_of_restarts(tensor, white.rank, params.max_restarts, params.max_iterations, params.tol,
                                 ctx.seed, first_start)
        ctx.report.info(f"ALS at rank {white.rank}: relative residual {found.residual:.4g} after "
                        f"{found.iterations} iteration(s)")
        _, vectors = found.symmetric(tensor)
        beta = topics_from_components(m2_basis @ whiten, vectors)
        return alpha_from_second_moment(beta, basis, m2, alpha0), beta, white

    alpha, beta, white = decompose(widest.rank)
    kept = np.argsort(alpha)[::-1][:k]
    if white.rank > k:
        alpha, beta, _ = decompose(k, start=beta[kept])
        kept = np.argsort(alpha)[::-1]
    return LDAModel(alpha[kept], beta[kept])


def _whitened_m3(moments: ProjectedPass, whiten: np.ndarray, m1: np.ndarray, e2: np.ndarray,
                 alpha0: float) -> np.ndarray:
    """M3(W, W, W) = E3(W,W,W) − α0/(α0+2)·(E2⊗M1 + permutations) + 2α0²/((α0+1)(α0+2))·M1⊗M1⊗M1."""
    e3 = moments.whitened_third(torch.from_numpy(whiten).to(moments.device)).cpu().numpy()
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
