"""NTM training speed beside a plain PyTorch VAE of the same shape, and topic quality on
Reuters against the issue's anchors, in one run.

Speed: ``--documents`` synthetic documents (default 1,000,000; vocabulary 20,000, about 100
tokens each drawn from a Zipf-like word distribution, sparse), written as sparse
RecordIO-protobuf in 4 files. Ours: ``ntm.train`` reading them through the real File-mode
channel reader (1 epoch, 20 topics, encoder_layers auto = [60, 40], mini_batch_size 256,
adam). Baseline: the same graph written as a textbook PyTorch VAE (``nn.Linear`` layers on
dense input), fed the same 256-document minibatches held in memory as CSR and densified one
at a time (the densification is timed: it is how a dense model is fed sparse documents). Both
use adam and run on CUDA when there is a GPU. Goal (issue 16): ours >= 1x the baseline's
documents/s.

Quality: the Reuters corpus shipped in the ``lda`` package (395 documents, 4,258 words) and
gensim's ``test_data`` Wikipedia dump (both loaded as ``benchmarks/lda.py`` loads them), 20
topics, mini_batch_size 64, 100 epochs (in memory, as the anchors were measured), with the
given optimizer settings; NPMI over all documents (document co-occurrence, the top 10 words
of each topic) and topic diversity (share of unique words among all topics' top 10 words).
Anchors (measured by the issue's author, same corpus and settings): octis ProdLDA NPMI 0.174,
diversity 0.83, 6.9 s; NeuralLDA 0.128 / 0.90 / 7.1 s; CombinedTM 0.191 / 0.82 / 12.4 s.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

import _results
from lda import load_reuters, load_wikipedia  # benchmarks/lda.py (it shadows the lda package here)
from pipealgos.algorithms import ntm
from pipealgos.algorithms.base import TrainingContext
from pipealgos.algorithms.ntm.topics import CoOccurrence, top_words
from pipealgos.algorithms.tensors import pick_device
from pipealgos.io import Minibatch, write_sparse
from pipealgos.platform.channels import JobChannels
from pipealgos.platform.config import ChannelConfig, MLRoot
from pipealgos.platform.metrics import MetricsReporter
from pipealgos.platform.registry import ALGORITHMS
from pipealgos.platform.train import leave_a_core_for_the_reader
from pipealgos.testing import MemoryChannels, RecordingReport

VOCAB, TOKENS, TOPICS, BATCH, FILES = 20_000, 100, 20, 256, 4
# The settings the README recommends for small corpora: on 20 seeds they tie the plain ProdLDA on
# both corpora (NPMI peaks after a number of updates, then falls; lr 0.002 was past it on
# Reuters and short of it on Wikipedia, whose epochs hold 2 minibatches against Reuters' 7).
RECOMMENDED = {"optimizer": "adam", "learning_rate": "0.0025", "weight_decay": "0.0001"}
RECOMMENDED_LABEL = "adam lr 0.0025 weight_decay 1e-4"
ANCHORS = {"octis ProdLDA": (0.174, 0.83, 6.9), "octis NeuralLDA": (0.128, 0.90, 7.1),
           "CombinedTM": (0.191, 0.82, 12.4)}


def make_documents(n: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1) ** 0.9
    lengths = rng.poisson(TOKENS, n)
    words = rng.choice(VOCAB, size=int(lengths.sum()), p=p / p.sum())
    rows = np.repeat(np.arange(n), lengths)
    x = sp.csr_matrix((np.ones(len(words), np.float32), (rows, words)), shape=(n, VOCAB))
    x.sum_duplicates()
    return x


def write_channel(x: sp.csr_matrix, root: Path) -> None:
    folder = root / "input" / "data" / "train"
    folder.mkdir(parents=True)
    for i, rows in enumerate(np.array_split(np.arange(x.shape[0]), FILES)):
        with open(folder / f"part-{i}.pbr", "wb") as out:
            write_sparse(out, x[rows[0]:rows[-1] + 1])


def run_ours(root: Path, device: torch.device, **settings) -> float:
    """Seconds of ``ntm.train`` on the File-mode channel under ``root`` (``settings`` override the
    synthetic run's hyperparameters)."""
    spec = ALGORITHMS["ntm"]
    channels = JobChannels(MLRoot(root), {"train": ChannelConfig("train", "File")}, spec)
    ctx = TrainingContext(channels, MetricsReporter("algo-1", io.StringIO()), device=device, sparse_input=True)
    params = spec.schema.build({"feature_dim": VOCAB, "num_topics": TOPICS, "mini_batch_size": BATCH,
                                "epochs": 1, "optimizer": "adam", **settings})
    started = time.perf_counter()
    ntm.train(params, ctx)
    return time.perf_counter() - started


class PlainVAE(nn.Module):
    """The same graph, written the textbook way: dense input, ``nn.Linear`` everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(VOCAB, 3 * TOPICS), nn.Sigmoid(), nn.Linear(3 * TOPICS, 2 * TOPICS),
                                     nn.Sigmoid())
        self.mean, self.logsigma = nn.Linear(2 * TOPICS, TOPICS), nn.Linear(2 * TOPICS, TOPICS)
        self.projection = nn.Linear(TOPICS, VOCAB)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mu, logsigma = self.mean(h), self.logsigma(h)
        z = torch.relu(mu + torch.exp(logsigma) * torch.randn_like(mu))
        recons = -(x * torch.log_softmax(self.projection(z), 1)).sum(1)
        kl = -0.5 * (1 + 2 * logsigma - mu * mu - torch.exp(2 * logsigma)).sum(1)
        return ((recons + kl) / x.sum(1).clamp(min=1)).mean()


def run_plain(x: sp.csr_matrix, device: torch.device) -> float:
    model = PlainVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    batches = [x[start:start + BATCH] for start in range(0, x.shape[0], BATCH)]
    started = time.perf_counter()
    for batch in batches:
        dense = torch.from_numpy(batch.toarray()).to(device)
        optimizer.zero_grad()
        model.loss(dense).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


class ProdLDA(nn.Module):
    """octis' ProdLDA (Srivastava & Sutton 2017) in plain PyTorch: input -> 2 softplus layers of 100
    -> dropout 0.2 -> batch-normed mu / logvar heads; Laplace approximation of a Dirichlet(alpha = 1)
    prior; z -> softmax -> dropout -> beta (topics x words) -> batch-normed logits -> log_softmax."""

    def __init__(self, words: int, topics: int = TOPICS, hidden: int = 100) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(words, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                                     nn.Dropout(0.2))
        self.mu, self.logvar = nn.Linear(hidden, topics), nn.Linear(hidden, topics)
        self.mu_norm, self.logvar_norm = nn.BatchNorm1d(topics, affine=False), nn.BatchNorm1d(topics, affine=False)
        self.topic_dropout = nn.Dropout(0.2)
        self.beta = nn.Linear(topics, words, bias=False)
        self.beta_norm = nn.BatchNorm1d(words, affine=False)
        # Laplace approximation of Dirichlet(1, ..., 1) in the softmax basis (its mean is 0).
        self.register_buffer("prior_var", torch.full((topics,), (1 - 2 / topics) + 1 / topics))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mu, logvar = self.mu_norm(self.mu(h)), self.logvar_norm(self.logvar(h))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        theta = self.topic_dropout(torch.softmax(z, 1))
        recons = -(x * torch.log_softmax(self.beta_norm(self.beta(theta)), 1)).sum(1)
        var = torch.exp(logvar)
        kl = 0.5 * ((var / self.prior_var).sum(1) + (mu * mu / self.prior_var).sum(1) - mu.shape[1]
                    + torch.log(self.prior_var).sum() - logvar.sum(1))
        return (recons + kl).mean()


def train_prodlda(x: sp.csr_matrix, epochs: int, seed: int = 0) -> tuple[ProdLDA, float]:
    """ProdLDA after ``epochs`` epochs (adam lr 2e-3, batch 64) on the dense rows of ``x`` held in
    memory, reshuffled each epoch (octis' way of feeding it), and the seconds they took. A last
    minibatch of one row is skipped (batch norm needs two)."""
    torch.manual_seed(seed)
    model = ProdLDA(x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    dense = torch.from_numpy(x.toarray().astype(np.float32))
    started = time.perf_counter()
    for _ in range(epochs):
        for rows in torch.randperm(dense.shape[0]).split(64):
            if len(rows) < 2:
                continue
            optimizer.zero_grad()
            model.loss(dense[rows]).backward()
            optimizer.step()
    return model, time.perf_counter() - started


class OctisFedProdLDA(ProdLDA):
    """The same network computed as octis' ``DecoderNetwork.forward`` and ``AVITM_model._loss``
    compute it: a learnable prior (mean and variance), the word distribution as softmax then
    log(p + 1e-10), the loss summed over the minibatch; returns the documents' topic mixtures too."""

    def __init__(self, words: int, topics: int = TOPICS) -> None:
        super().__init__(words, topics)
        self.prior_mean = nn.Parameter(torch.zeros(topics))
        self.prior_variance = nn.Parameter(torch.full((topics,), 1 - 1 / topics))

    def octis_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, log_sigma = self.mu_norm(self.mu(h)), self.logvar_norm(self.logvar(h))
        sigma = torch.exp(log_sigma)
        topic_documents = torch.softmax(torch.randn_like(sigma).mul(torch.exp(0.5 * log_sigma)).add_(mu), 1)
        word_distributions = torch.softmax(self.beta_norm(self.beta(self.topic_dropout(topic_documents))), 1)
        variance_ratio = (sigma / self.prior_variance).sum(1)
        mean_term = ((self.prior_mean - mu) ** 2 / self.prior_variance).sum(1)
        kl = 0.5 * (variance_ratio + mean_term - mu.shape[1] + self.prior_variance.log().sum() - log_sigma.sum(1))
        recons = -(x * torch.log(word_distributions + 1e-10)).sum(1)
        return (kl + recons).sum(), topic_documents


class _DenseRows(torch.utils.data.Dataset):
    """octis' ``BOWDataset``: one dense row of counts per item, as a dict."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = counts

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"X": torch.FloatTensor(self.counts[index])}


def time_prodlda_fed_as_octis(x: sp.csr_matrix, epochs: int, seed: int = 0) -> float:
    """Seconds of ``epochs`` epochs of ProdLDA fed and stepped as octis' ``AVITM_model.fit`` does
    (use_partitions=False, so no validation pass): a ``DataLoader`` (batch 64, shuffled, no
    worker processes) over dense count rows, adam lr 2e-3 with betas (0.99, 0.99), ``loss.item()``
    and the topic mixtures collected every step."""
    torch.manual_seed(seed)
    model = OctisFedProdLDA(x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.99, 0.99))
    loader = torch.utils.data.DataLoader(_DenseRows(x.toarray()), batch_size=64, shuffle=True, num_workers=0)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        loss_sum, topic_documents = 0.0, []
        for batch in loader:
            model.zero_grad()
            loss, mixtures = model.octis_loss(batch["X"])
            topic_documents.extend(mixtures)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
    return time.perf_counter() - started


def reuters_epoch_timing(device: torch.device, epochs: int = 100, pairs: int = 5) -> list[str]:
    """Seconds per epoch on Reuters, batch 64, 20 topics: ours through RecordIO files and the real
    File-mode reader (``ntm.train``'s whole time over ``epochs``: pass 0, model set-up and every
    epoch included; no validation channel) against in-memory ProdLDA (the epochs' loop only);
    ``pairs`` runs of each in alternating order, medians."""
    x = load_reuters()
    # The first optimizer a process builds imports torch._dynamo (~1.8 s here): paid once per
    # process by either side, so paid before both rather than charged to whichever runs first.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    times: dict[str, list[float]] = {"ours": [], "prodlda": [], "octis-fed": []}
    with tempfile.TemporaryDirectory(prefix="bench-ntm-reuters-") as tmp:
        write_channel(x, Path(tmp))
        settings = {"feature_dim": x.shape[1], "mini_batch_size": 64, "epochs": epochs, "num_patience_epochs": epochs,
                    "learning_rate": RECOMMENDED["learning_rate"], "weight_decay": RECOMMENDED["weight_decay"]}
        sides = {"ours": lambda: run_ours(Path(tmp), device, **settings), "prodlda": lambda: train_prodlda(x, epochs)[1],
                 "octis-fed": lambda: time_prodlda_fed_as_octis(x, epochs)}
        for pair in range(pairs):
            for side in (list(sides) if pair % 2 == 0 else list(reversed(sides))):
                times[side].append(sides[side]() / epochs)
    ours, prodlda, octis_fed = (np.median(times[side]) * 1000 for side in ("ours", "prodlda", "octis-fed"))
    return [f"| pipealgos ntm (RecordIO files, `ntm.train` total / epochs) | {ours:.1f} | {_milliseconds(times['ours'])} |",
            f"| ProdLDA fed as octis feeds it (DataLoader of dense rows, `loss.item()` each step) | {octis_fed:.1f} | "
            f"{_milliseconds(times['octis-fed'])} |",
            f"| plain PyTorch ProdLDA (dense rows in memory, tight loop) | {prodlda:.1f} | "
            f"{_milliseconds(times['prodlda'])} |",
            "",
            f"- per-epoch time ours / ProdLDA fed as octis = **{ours / octis_fed:.2f}** (goal <= 0.5: "
            f"{'met' if ours / octis_fed <= 0.5 else 'MISSED'}); ours / the tight-loop ProdLDA = {ours / prodlda:.2f}; medians of {pairs} "
            f"rounds in alternating order, {torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}"]


def _milliseconds(seconds: list[float]) -> str:
    return ", ".join(f"{t * 1000:.1f}" for t in seconds)


def topic_scores(x: sp.csr_matrix, word_topic_weights: np.ndarray) -> tuple[float, float]:
    """(NPMI over all documents of ``x``, diversity) of the top 10 words of (words, topics) weights."""
    top = top_words(word_topic_weights)
    pairs = CoOccurrence(top)
    pairs.add(x)
    return pairs.npmi(top), len(np.unique(top)) / top.size


def corpus_quality(x: sp.csr_matrix, settings: dict[str, str], seed: int = 0) -> tuple[float, float, float]:
    """(NPMI, diversity, seconds) of 100 epochs on the corpus ``x`` with ``settings``."""
    blocks = [Minibatch(x[i:i + 64], None) for i in range(0, x.shape[0], 64)]
    params = ALGORITHMS["ntm"].schema.build({"feature_dim": x.shape[1], "num_topics": TOPICS, "mini_batch_size": 64,
                                             "epochs": 100, "num_patience_epochs": 100, **settings})
    ctx = TrainingContext(MemoryChannels({"train": blocks}), RecordingReport(), sparse_input=True, seed=seed)
    started = time.perf_counter()
    model = ntm.train(params, ctx)
    seconds = time.perf_counter() - started
    return *topic_scores(x, model.topic_word_weights()), seconds


def seed_means(corpus: str, x: sp.csr_matrix, settings: dict[str, str], seeds: range) -> list[str]:
    """Rows of ours with ``settings`` and of plain ProdLDA, each the mean over ``seeds`` (single
    seeds of both vary by +-0.1 NPMI on these small corpora)."""
    ours = np.mean([corpus_quality(x, settings, seed) for seed in seeds], axis=0)
    prodlda = []
    for seed in seeds:
        model, seconds = train_prodlda(x, 100, seed)
        prodlda.append((*topic_scores(x, model.beta.weight.detach().numpy()), seconds))
    theirs = np.mean(prodlda, axis=0)
    label = f"mean of seeds {seeds.start}-{seeds.stop - 1}"
    return [f"| {corpus}: pipealgos ntm, {RECOMMENDED_LABEL}, {label} | 100 | {ours[2]:.1f} | "
            f"{ours[0]:.3f} | {ours[1]:.2f} |",
            f"| {corpus}: plain PyTorch ProdLDA (octis' architecture, same run), {label} | 100 | {theirs[2]:.1f} | "
            f"{theirs[0]:.3f} | {theirs[1]:.2f} |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1_000_000, help="synthetic documents (default 1,000,000)")
    parser.add_argument("--reuters-timing-only", action="store_true",
                        help="only time epochs on Reuters against ProdLDA; print, record nothing")
    args = parser.parse_args()
    documents = args.documents
    device = pick_device()
    leave_a_core_for_the_reader(device)
    timing = reuters_epoch_timing(device)
    print(*timing, sep="\n", flush=True)
    if args.reuters_timing_only:
        return 0
    x = make_documents(documents)
    with tempfile.TemporaryDirectory(prefix="bench-ntm-") as tmp:
        warm = Path(tmp) / "warm"
        write_channel(x[:2000], warm)
        run_ours(warm, device), run_plain(x[:2000], device)
        root = Path(tmp) / "full"
        write_channel(x, root)
        ours_s = run_ours(root, device)
    plain_s = run_plain(x, device)
    ratio = plain_s / ours_s
    lines = [f"| pipealgos ntm (RecordIO files, real reader) | {documents / ours_s:,.0f} | {ours_s:.1f} |",
             f"| plain PyTorch VAE (in-memory CSR, densified per minibatch) | {documents / plain_s:,.0f} | "
             f"{plain_s:.1f} |"]
    print(*lines, f"ratio {ratio:.2f}", sep="\n", flush=True)

    quality_rows = []
    for corpus, x in (("Reuters", load_reuters()), ("Wikipedia", load_wikipedia())):
        for label, settings in ((RECOMMENDED_LABEL, RECOMMENDED), ("defaults (adadelta)", {})):
            npmi, diversity, seconds = corpus_quality(x, settings)
            quality_rows.append(f"| {corpus}: pipealgos ntm, {label} | 100 | {seconds:.1f} | {npmi:.3f} | {diversity:.2f} |")
            print(quality_rows[-1], flush=True)
        quality_rows += seed_means(corpus, x, RECOMMENDED, range(20))
        print(*quality_rows[-2:], sep="\n", flush=True)
    anchors = [f"| {name} (anchor) | 100 | {s:g} | {n:.3f} | {d:.2f} |" for name, (n, d, s) in ANCHORS.items()]
    load = os.getloadavg()[0]
    section = "\n".join([
        f"## NTM on {device.type} (`benchmarks/ntm.py`)",
        "",
        f"`python benchmarks/ntm.py --documents {documents}` — {documents:,} synthetic documents, vocabulary "
        f"{VOCAB:,}, ~{TOKENS} tokens, 20 topics, mini_batch_size {BATCH}, 1 epoch, adam, on {device}; "
        f"{_results.machine(f'torch {torch.__version__}', f'{torch.get_num_threads()} thread(s)')}; "
        f"load average {load:.1f} when it finished.",
        "",
        "| run | documents/s | seconds |",
        "|---|---:|---:|",
        *lines,
        "",
        f"- documents/s ours / plain VAE = **{ratio:.2f}** (goal >= 1: {'met' if ratio >= 1 else 'MISSED'})",
        "",
        "Reuters (`lda` package, 395 documents, 4,258 words) and gensim's `test_data` Wikipedia dump (106 "
        "articles, 13,674 words, benchmarks/lda.py's vocabulary), 20 topics, mini_batch_size 64, seed 0, NPMI over "
        "all documents and diversity of the top 10 words (anchors: Reuters):",
        "",
        "| run | epochs | seconds | NPMI | diversity |",
        "|---|---:|---:|---:|---:|",
        *quality_rows,
        *anchors,
        "",
        f"Seconds per epoch on Reuters (batch 64, 20 topics, 100 epochs, {RECOMMENDED_LABEL}), ours against octis' "
        "ProdLDA architecture in plain PyTorch, same run and torch threads:",
        "",
        "| run | ms per epoch (median) | runs |",
        "|---|---:|---|",
        *timing,
    ])
    _results.record_section(f"ntm-{device.type}", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
