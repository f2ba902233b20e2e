"""The NTM training job: epochs of minibatch gradient steps on the variational bound, early
stopping on validation, then topics, their scores and the test losses.

Per epoch ``#quality_metric`` lines for ``train`` and (with that channel) ``validation``:
``total_loss``, ``recons_loss`` and ``kl_loss``, the means over the pass's non-empty documents
of the per-document, per-word losses (``validation total_loss`` is the tuning objective);
``test`` gets the same three at the end (and ``npmi`` when a vocabulary is given). Train losses
are those of the sampled z the gradient saw; validation and test are evaluated at z = relu(μ)
(no sampling), so the early-stopping signal is not noisy. Training keeps the parameters of the
epoch with the lowest validation ``total_loss`` (the last epoch's without validation), and
stops early when the watched loss (validation, else train) has not improved relatively by
``tolerance`` for ``num_patience_epochs`` epochs.

Initialisation (the spec leaves it open): pass 0 of the train channel counts every word
(all-reduced over hosts) and the decoder's ``projection_bias`` starts at their log frequencies;
``logsigma_bias`` starts at -2 (see :mod:`.network`). The epochs read passes 1 to ``epochs``.
On Reuters (20 topics, batch 64, 100 epochs, ``optimizer=adam learning_rate=0.002
weight_decay=0.0001``) this raised the mean NPMI over seeds 0-3 from 0.153 to 0.186 and the
topic diversity from 0.77 to 0.84.

Gradient step: the gradient of the mean loss over the minibatch's non-empty documents, times
``rescale_gradient``, each element clipped to ±``clip_gradient``, then the optimizer. The
optimizers take MXNet's defaults (the real container is MXNet): ``adadelta`` is MXNet's
AdaDelta (rho 0.9, eps 1e-5), which has no learning rate, so ``learning_rate`` does not affect
it (torch's Adadelta with lr = 1); ``rmsprop`` gamma 0.9, eps 1e-8; ``adagrad`` eps 1e-7.
``weight_decay`` times the weight is added to the clipped gradient (torch's ``weight_decay``),
for the weights only (FullyConnected ``*_weight`` and batch norm's gamma), as MXNet's
optimizers do by default (``wd_mult`` 0 for biases): the decoder bias holds the background word
frequencies, and decaying it pulls them towards uniform. ``sub_sample`` keeps each training
document of a pass with that probability (seeded per host).

Multi-host: synchronous data parallelism, as DistributedDataParallel does it, written with the
shared :func:`~pipealgos.algorithms.collectives.all_reduce` (gloo on CPU, NCCL on GPU) rather
than the DDP wrapper: after each minibatch one all-reduce sums every host's gradient sums,
loss sums and document counts, and every host applies the same update (the mean over all the
hosts' documents), so parameters stay identical. Unlike DDP, shards need not hold the same
number of minibatches (a host that has run out joins with zeros until all have) and the mean
is weighted by documents, not by hosts. Batch-norm statistics are each host's own; the
leader's are saved. Validation sums are all-reduced, so sharded and replicated validation
channels give the same loss on every host and every host stops at the same epoch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator

import numpy as np
import torch

from pipealgos.io import DataError, Minibatch

from ..base import Params, TrainingContext, report_test_channel
from ..collectives import EarlyStopping, all_reduce
from .model import NTMModel, bags_of
from .network import NTMNetwork
from .topics import CoOccurrence, RandomIndexEmbeddings, read_vocabulary, top_words, topic_uniqueness

NAME = "ntm"
LOSS_NAMES = ("total_loss", "recons_loss", "kl_loss")
SMALL_MINIBATCH = 1 << 20  # documents x vocabulary of a minibatch below which one thread computes


def encoder_layers(params: Params) -> list[int]:
    """``encoder_layers`` with ``auto`` resolved to [3·num_topics, 2·num_topics]."""
    if params.encoder_layers == "auto":
        return [3 * params.num_topics, 2 * params.num_topics]
    return list(params.encoder_layers)


def make_optimizer(params: Params, network: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``params.optimizer`` with MXNet's defaults and weight decay (module
    docstring), in torch's fused form where torch has one for the device (one kernel over all
    parameters, decay included, instead of ~10 per parameter), else its multi-tensor form."""
    lr, wd = params.learning_rate, params.weight_decay
    named = list(network.named_parameters())
    parameters = [{"params": [w for name, w in named if name.endswith("weight")], "weight_decay": wd},
                  {"params": [w for name, w in named if not name.endswith("weight")], "weight_decay": 0.0}]
    on_cpu = named[0][1].device.type == "cpu"
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, fused=True)
    if params.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    if params.optimizer == "adagrad":  # torch's fused Adagrad is CPU-only
        return torch.optim.Adagrad(parameters, lr=lr, eps=1e-7, **({"fused": True} if on_cpu else {"foreach": True}))
    if params.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, alpha=0.9, eps=1e-8, foreach=True)
    return torch.optim.Adadelta(parameters, lr=1.0, rho=0.9, eps=1e-5, foreach=True)


def train(params: Params, ctx: TrainingContext) -> NTMModel:
    layers = ctx.resolve("encoder_layers", encoder_layers(params))
    vocabulary = None
    if "auxiliary" in ctx.channels.names():
        vocabulary = read_vocabulary(ctx.channels.files("auxiliary"), params.feature_dim)
    threads = torch.get_num_threads()
    if ctx.device.type == "cpu" and params.mini_batch_size * params.feature_dim < SMALL_MINIBATCH:
        # Small minibatches: torch's intra-op threads cost more in synchronisation than they
        # save (3-10x slower on a loaded 2-core machine), so one thread.
        torch.set_num_threads(1)
    try:
        return _Job(params, layers, vocabulary, ctx).run()
    finally:
        torch.set_num_threads(threads)


def check_counts(batch: Minibatch, channel: str, first_record: int) -> None:
    """Word counts are never negative (the record index is 0-based within the pass)."""
    features = batch.features
    if batch.is_sparse:
        if not features.nnz or features.data.min() >= 0:
            return
        position = int(np.flatnonzero(features.data < 0)[0])
        row = int(np.searchsorted(features.indptr, position, side="right")) - 1
        column, value = int(features.indices[position]), float(features.data[position])
    else:
        if not features.size or features.min() >= 0:
            return
        row, column = (int(i) for i in np.argwhere(features < 0)[0])
        value = float(features[row, column])
    raise DataError(f"word {column} has a negative count ({value:g})", channel=channel, record=first_record + row,
                    fix="NTM reads bag-of-words counts: every value must be >= 0")


class _Job:
    def __init__(self, p: Params, layers: list[int], vocabulary: list[str] | None, ctx: TrainingContext) -> None:
        self.p, self.ctx, self.vocabulary = p, ctx, vocabulary
        # The same seed on every host: the hosts start from the same parameters.
        init = torch.Generator().manual_seed(ctx.seed)
        self.network = NTMNetwork(p.feature_dim, p.num_topics, layers, p.encoder_layers_activation, p.batch_norm,
                                  init).to(ctx.device)
        self.parameters = list(self.network.parameters())
        self.optimizer = make_optimizer(p, self.network)
        # Noise and sub-sampling differ per host (each host's documents get their own draws).
        self.noise = torch.Generator(device=ctx.device).manual_seed(ctx.seed * 1_000_003 + ctx.rank + 1)
        self.sampler = np.random.default_rng([ctx.seed, ctx.rank])
        self.embeddings = RandomIndexEmbeddings(p.feature_dim, [ctx.seed, ctx.rank, 1]) if vocabulary else None
        self.clip = None if p.clip_gradient in ("infinity", "inf") else float(p.clip_gradient)

    # --- data --------------------------------------------------------------------------------

    def _batches(self, channel: str, epoch: int) -> Iterator[Minibatch]:
        records = 0
        # read_only: nothing here writes into a minibatch (bags_of and sub-sampling make new arrays).
        for batch in self.ctx.channels.minibatches(channel, epoch, self.p.mini_batch_size, self.p.feature_dim,
                                                   read_only=True):
            check_counts(batch, channel, records)
            records += batch.size
            yield batch

    # --- training ----------------------------------------------------------------------------

    def run(self) -> NTMModel:
        ctx, p = self.ctx, self.p
        has_validation = "validation" in ctx.channels.names()
        stopping = EarlyStopping(ctx.report, p.num_patience_epochs, p.tolerance, higher_is_better=False)
        best_loss, best_state = math.inf, None
        self.network.start_from_background(self._count_words())
        for epoch in range(p.epochs):
            started = time.time()
            train_losses, documents = self._train_epoch(epoch + 1)  # pass 0 counted the words
            self._report("train", train_losses, epoch)
            ctx.report.throughput(documents / max(time.time() - started, 1e-9))
            watched = train_losses
            if has_validation:
                watched = self._evaluate("validation", epoch, reduce=True)
                self._report("validation", watched, epoch)
                if watched[0] < best_loss:
                    best_loss, best_state = watched[0], copy.deepcopy(self.network.state_dict())
            ctx.report.progress(100.0 * (epoch + 1) / p.epochs)
            if stopping.update(epoch, watched[0]):
                break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        top = top_words(self.network.projection.weight.detach().cpu().numpy())
        self._log_topics(top)
        model = NTMModel(self.network)
        report_test_channel(ctx, lambda: self._test(top))
        return model

    def _count_words(self) -> np.ndarray:
        """Pass 0 of the train channel, before any step: every word's total count over all
        hosts' documents (for :meth:`NTMNetwork.start_from_background`), and the WETC
        embeddings' documents. The epochs then read passes 1 to ``epochs`` (in Pipe mode, the
        FIFOs ``train_1`` onwards)."""
        counts = np.zeros(self.p.feature_dim)
        for batch in self._batches("train", 0):
            features = batch.features
            if batch.is_sparse:
                counts += np.bincount(features.indices, weights=features.data, minlength=self.p.feature_dim)
            else:
                counts += features.sum(0, dtype=np.float64)
            if self.embeddings is not None:
                self.embeddings.add(features)
        if self.ctx.distributed:
            counts = all_reduce([counts], self.ctx.device)[0]
        return counts

    def _train_epoch(self, data_pass: int) -> tuple[np.ndarray, int]:
        """One pass over the train channel (its pass number ``data_pass``); the mean (total,
        recons, KL) loss per document and the documents seen."""
        self.network.train()
        sums = np.zeros(4)  # recons, KL, documents, hosts reading
        batches = self._batches("train", data_pass)
        while True:
            batch = next(batches, None)
            stats = self._backward(batch)
            grads = [torch.zeros_like(w) if w.grad is None else w.grad for w in self.parameters]
            if self.ctx.distributed:
                *grads, stats = all_reduce([*grads, stats], self.ctx.device)
            stats = np.array(stats.tolist())
            if stats[3] == 0:
                break
            if stats[2] > 0:
                self._step(grads, stats[2])
            sums += stats
        if sums[2] == 0:
            raise DataError("every document of the pass is empty (no word has a count above 0)", channel="train",
                            fix="Give NTM documents that hold words (rows of word counts)")
        recons, kl = sums[:2] / sums[2]
        return np.array([recons + kl, recons, kl]), int(sums[2])

    def _backward(self, batch: Minibatch | None) -> torch.Tensor:
        """The minibatch's gradient left in ``.grad``: of the loss sums over several hosts, of
        the mean loss times ``rescale_gradient`` on one. Returns (recons sum, KL sum, non-empty
        documents, 1) (all zeros for a host with no minibatch left)."""
        for w in self.parameters:
            w.grad = None
        device = self.ctx.device
        if batch is None:
            return torch.zeros(4, dtype=torch.float64, device=device)
        features = batch.features
        if self.p.sub_sample < 1.0:
            features = features[self.sampler.random(batch.size) < self.p.sub_sample]
        bags = bags_of(features, device)
        noise = torch.randn((bags.rows, self.p.num_topics), generator=self.noise, device=device)
        recons, kl = self.network.losses(bags, noise)
        totals = torch.stack([recons.sum(), kl.sum()])
        if bags.documents:
            # One host knows the step's document count already: backward then gives the scaled
            # mean's gradient directly, and _step makes no pass over the gradients for it.
            scale = 1.0 if self.ctx.distributed else self.p.rescale_gradient / bags.documents
            (totals.sum() * scale).backward()
        counts = torch.tensor([bags.documents, 1.0], dtype=torch.float64, device=device)
        return torch.cat([totals.detach().double(), counts])

    def _step(self, grads: list[torch.Tensor], documents: float) -> None:
        if self.ctx.distributed:  # gradient sums of every host's documents
            torch._foreach_mul_(grads, self.p.rescale_gradient / documents)
        if self.clip is not None:
            torch._foreach_clamp_min_(grads, -self.clip)
            torch._foreach_clamp_max_(grads, self.clip)
        for w, g in zip(self.parameters, grads):
            w.grad = g
        self.optimizer.step()

    # --- evaluation ----------------------------------------------------------------------------

    def _evaluate(self, channel: str, epoch: int, reduce: bool, cooccurrence: CoOccurrence | None = None) -> np.ndarray:
        """Mean (total, recons, KL) per non-empty document of one pass at z = relu(μ)."""
        self.network.eval()
        loss_sums, documents = torch.zeros(2, dtype=torch.float64, device=self.ctx.device), 0
        with torch.no_grad():
            for batch in self._batches(channel, epoch):
                if cooccurrence is not None:
                    cooccurrence.add(batch.features)
                bags = bags_of(batch.features, self.ctx.device)
                recons, kl = self.network.losses(bags, None)
                loss_sums += torch.stack([recons.sum(), kl.sum()]).double()
                documents += bags.documents
        sums = torch.cat([loss_sums, torch.tensor([float(documents)], dtype=torch.float64, device=self.ctx.device)])
        if reduce and self.ctx.distributed:
            sums = all_reduce([sums], self.ctx.device)[0]
        if sums[2] == 0:
            raise DataError(f"every document of the {channel} channel is empty (no word has a count above 0)",
                            channel=channel, fix="Give NTM documents that hold words (rows of word counts)")
        recons, kl = (sums[:2] / sums[2]).tolist()
        return np.array([recons + kl, recons, kl])

    def _test(self, top: np.ndarray) -> None:
        cooccurrence = CoOccurrence(top) if self.vocabulary else None
        losses = self._evaluate("test", 0, reduce=False, cooccurrence=cooccurrence)
        self._report("test", losses)
        if cooccurrence is not None:
            self.ctx.report.quality("test", "npmi", cooccurrence.npmi(top), "score")

    # --- reporting -----------------------------------------------------------------------------

    def _report(self, channel: str, losses: np.ndarray, epoch: int | None = None) -> None:
        for name, value in zip(LOSS_NAMES, losses):
            self.ctx.report.quality(channel, name, float(value), "loss", epoch=epoch)

    def _log_topics(self, top: np.ndarray) -> None:
        """With a vocabulary: WETC, TU and each topic's top words (every host joins the
        embeddings' all-reduce; the leader logs)."""
        if self.embeddings is None:
            return
        if self.ctx.distributed:
            self.embeddings.vectors = all_reduce([self.embeddings.vectors], self.ctx.device)[0]
        if not self.ctx.is_leader:
            return
        wetc, tu = self.embeddings.wetc(top), topic_uniqueness(top)
        self.ctx.report.quality("train", "wetc", wetc, "score")
        self.ctx.report.quality("train", "tu", tu, "score")
        self.ctx.report.info(f"Topics from epoch:final (num_topics:{len(top)}) [wetc {wetc:.2f}, tu {tu:.2f}]:")
        for index, words in enumerate(top):
            self.ctx.report.info(f"topic {index}: {' '.join(self.vocabulary[w] for w in words)}")
