"""Likelihood refinement of the spectral topics: a few passes of variational EM over the
documents that training already holds in memory (the sample of :mod:`.training`).

The method of moments stays the core (SageMaker's): it gives α and a first β from the whole
corpus in one pass. But its third moment is estimated from few documents on a small corpus, and
β then carries that noise into the held-out likelihood: on Reuters (316 training documents)
document-completion perplexity was 1,827 against 1,655 for sklearn's online LDA, and on
gensim's Wikipedia dump (84 documents) 10,363, worse than the unigram's 9,689. Spectral
estimates are consistent starting points for likelihood methods, which then improve their
finite-sample efficiency: Anandkumar, Ge, Hsu, Kakade, Telgarsky (JMLR 2014), the spec's
method, note that the moment estimates can initialise local search such as EM; Zhang, Chen,
Zhou, Jordan, "Spectral Methods meet EM" (NIPS 2014; JMLR 2016) prove for a latent-variable
model (crowdsourcing) that a spectral start followed by EM reaches the optimal error rate.

Each pass is Blei, Ng, Jordan's (2003) variational EM with α held at the spectral estimate:

* E-step: per document, ``STEPS_PER_PASS`` coordinate-ascent steps of the serving
  optimisation (:class:`.inference.DocumentWords`), warm-started from the previous pass's γ.
  A fixed number of steps per document (no convergence test over a block of documents) makes
  each document's result independent of how documents are grouped into minibatches and hosts.
* M-step: β_k ∝ Σ_d Σ_w c_dw φ_dwk + (tokens outside the refined documents)·π_k·β̂_k + η,
  summed over hosts (one all-reduce of topics × V per pass, so every host ends with the same
  model). β̂ is the spectral β, π_k = α_k/Σα the corpus's share of topic k (the spectral
  estimate). The refined documents are each host's first held ones, up to ``REFINE_ENTRIES``
  stored entries. When they are the whole corpus (small corpora, where the gain is) this is
  plain EM; on a larger corpus the other documents enter as pseudo-counts at their spectral
  topics, so an estimate from the whole corpus is not replaced by one from its first
  documents; below ``MIN_SHARE`` of the corpus's tokens the refinement is skipped.
  η = 1/num_topics is the pseudo-count of LDA's symmetric Dirichlet prior on β (the
  "smoothed" LDA of Blei et al. 2003, section 5.4; β is then the mean of its variational
  posterior, as in sklearn and gensim, whose default η is also 1/num_topics): a word unseen in
  a topic's training documents keeps a small probability there instead of 0, which held-out
  documents would score as impossible. Measured (10 passes of 5 steps): η = 0.001, 0.01, 0.05,
  0.1 gave Reuters perplexity 1,645, 1,598, 1,548, 1,527 and the Wikipedia dump's 6,482
  (η = 0.01), 6,060, 6,027; η = 1/num_topics is the anchors' own choice, not tuned here.

Why α is kept: the spectral α is the model's Dirichlet prior as SageMaker defines it (α0 is a
hyperparameter), and the held-out scores barely depend on it: scoring the refined β with
α = 1/num_topics instead gave Reuters 1,547 against 1,545, the Wikipedia dump 6,128 both.
(Refitting α, e.g. by Minka's fixed point, was not tried.)

Cost: ``PASSES`` × ``STEPS_PER_PASS`` sweeps over at most ``REFINE_ENTRIES`` stored entries,
each a gather, a normalisation and a scatter of entries × topics values: bounded, whatever the
corpus (measured at the cap, 988,963 entries and 20 topics: 3.7 s; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from ..collectives import all_reduce
from .inference import DocumentWords
from .model import LDAModel

PASSES = 5
STEPS_PER_PASS = 5
# Stored (document, word) entries refined, per host: the first held documents up to this many.
# One sweep costs ~0.16 s per 1,000,000 entries and 20 topics (2-core AMD EPYC, one thread),
# a refinement PASSES x (STEPS_PER_PASS + 1) sweeps: ~5 s at most.
REFINE_ENTRIES = 1_000_000
# Skipped when the refined documents hold less than this share of the corpus's tokens: the
# M-step gives them that weight, so β could move little for the sweeps' cost (the benchmark's
# 1,000,000 documents: 1 %).
MIN_SHARE = 0.05
ENTRIES_PER_BLOCK = 262_144  # stored entries solved together: bounds the entries × topics temporaries


def document_blocks(matrices: Sequence[sp.csr_matrix]) -> list[sp.csr_matrix]:
    """The first held documents with up to ``REFINE_ENTRIES`` stored entries, in float64
    blocks of about ``ENTRIES_PER_BLOCK`` entries (at least one document each)."""
    blocks, held = [], 0
    for counts in matrices:
        start = 0
        while start < counts.shape[0] and held < REFINE_ENTRIES:
            room = min(ENTRIES_PER_BLOCK, REFINE_ENTRIES - held)
            stop = int(np.searchsorted(counts.indptr, counts.indptr[start] + room, side="right")) - 1
            stop = max(stop, start + 1)
            block = sp.csr_matrix(counts[start:stop], dtype=np.float64)
            blocks.append(block)
            held += block.nnz
            start = stop
    return [block for block in blocks if block.nnz]


def refine(spectral: LDAModel, blocks: list[sp.csr_matrix], corpus_tokens: float, distributed: bool,
           device: torch.device) -> np.ndarray | None:
    """β after ``PASSES`` passes of variational EM over ``blocks`` (this host's first held
    documents) from the spectral (α, β), or None when they hold less than ``MIN_SHARE`` of the
    corpus's tokens; ``corpus_tokens``: the whole corpus's, all hosts. See the module docstring."""
    refined_tokens = float(sum(block.data.sum() for block in blocks))
    if distributed:
        refined_tokens = float(all_reduce([np.array([refined_tokens])], device)[0][0])
    if refined_tokens < MIN_SHARE * corpus_tokens:
        return None
    prior = torch.from_numpy(spectral.alpha.astype(np.float64))
    gammas: list[torch.Tensor | None] = [None] * len(blocks)
    beta = spectral.beta
    for _ in range(PASSES):
        expected = torch.zeros(beta.shape[1], beta.shape[0], dtype=torch.float64)  # V × topics
        for index, block in enumerate(blocks):
            words = DocumentWords(block, beta)
            gamma = words.first_gamma(prior) if gammas[index] is None else gammas[index]
            for _ in range(STEPS_PER_PASS):
                gamma, entry_counts = words.step(gamma, prior)
            gammas[index] = gamma
            expected.index_add_(0, words.words, entry_counts)
        expected = expected.T.numpy()
        if distributed:
            expected = all_reduce([expected], device)[0]
        beta = _m_step(expected, spectral, corpus_tokens)
    return beta


def _m_step(expected: np.ndarray, spectral: LDAModel, corpus_tokens: float) -> np.ndarray:
    """β from the refined documents' expected counts (topics × V), the spectral β for the
    other tokens, shared out by the spectral α (the whole corpus's topic proportions, not the
    refined documents': a corpus ordered by topic would otherwise lose the topics its first
    documents lack), and η = 1/num_topics."""
    outside = max(corpus_tokens - expected.sum(), 0.0)
    share = (spectral.alpha / spectral.alpha.sum())[:, None]
    counts = expected + outside * share * spectral.beta + 1.0 / spectral.num_topics  # η = 1/num_topics
    return counts / counts.sum(1, keepdims=True)
