"""What the topics are, and how good: the vocabulary, top words, TU, WETC and NPMI.

* **Vocabulary**: the ``auxiliary`` channel's ``vocab.txt`` (UTF-8, one word per line, line i
  = feature i; a final newline is optional, ``\\r\\n`` endings are accepted).
* **Top words** of topic t: the words with the largest ``projection_weight[:, t]`` (the decoder
  column; softmax over it gives the topic's word pseudo-probabilities). :data:`TOP_WORDS` each.
* **TU**, topic uniqueness (Nan et al. 2019, as SageMaker NTM logs it): the mean over topics and
  their top words of 1 / (number of topics whose top words hold that word); 1 = no word shared.
* **WETC**, word-embedding topic coherence (Ding et al. 2018, pairwise form): the mean over
  topics of the mean cosine similarity of the embeddings of each pair of its top words. No
  pre-trained embedding can be downloaded, so the embeddings are learnt from the training
  corpus during the first epoch, by *random indexing* over documents (Kanerva et al. 2000,
  Sahlgren 2005): each training document gets a random ±1 vector of :data:`EMBEDDING_DIM`
  entries, and a word's embedding is the count-weighted sum of the vectors of the documents
  it occurs in. The cosine of two such embeddings estimates the cosine of the two words'
  document-occurrence vectors (a Johnson-Lindenstrauss projection, error ~ 1/√dim), so words
  that occur in the same documents score close to 1 and words that never meet close to 0.
  Hosts add their embeddings up (each host's documents have their own vectors).
* **NPMI** (Bouma 2009; Lau et al. 2014) on the ``test`` channel: for each pair of a topic's top
  words, log(P(i, j) / (P(i) P(j))) / −log P(i, j) with P the share of test documents holding
  the word(s); −1 for a pair that never occurs together, 1 for a pair in every document; the
  mean over pairs and topics.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pipealgos.io import DataError
from pipealgos.io.minibatch import Features

VOCAB_FILE = "vocab.txt"
TOP_WORDS = 10
EMBEDDING_DIM = 128


# --- the vocabulary ----------------------------------------------------------------------------


def read_vocabulary(files: list[Path], feature_dim: int, channel: str = "auxiliary") -> list[str]:
    """The words of ``vocab.txt`` among ``files`` (the raw channel's), one per feature."""
    vocab = [path for path in files if path.name == VOCAB_FILE]
    if not vocab:
        raise DataError(f"no {VOCAB_FILE} among its files ({', '.join(p.name for p in files) or 'none'})",
                        channel=channel, fix=f"Put the vocabulary in a file named {VOCAB_FILE}, one word per line")
    path = vocab[0]
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{VOCAB_FILE} is not UTF-8: byte {data[exc.start]:#04x} on line {line} cannot be decoded",
                        channel=channel, source=str(path), offset=exc.start,
                        fix="Save the vocabulary as UTF-8, one word per line") from None
    words = [line.removesuffix("\r") for line in text.split("\n")]
    if words and words[-1] == "":  # the final newline ends the last line; it adds none
        words.pop()
    if len(words) != feature_dim:
        raise DataError(f"{VOCAB_FILE} has {len(words)} lines but feature_dim is {feature_dim}",
                        channel=channel, source=str(path),
                        fix="Write exactly one word per feature (line i names feature i), or correct feature_dim")
    return words


# --- scores --------------------------------------------------------------------------------------


def top_words(projection_weight: np.ndarray, count: int = TOP_WORDS) -> np.ndarray:
    """(topics, count) word indices, the largest decoder weights of each topic first."""
    count = min(count, projection_weight.shape[0])
    return np.argsort(-projection_weight.T, axis=1, kind="stable")[:, :count]


def topic_uniqueness(top: np.ndarray) -> float:
    """TU of the topics' top-word lists (rows of ``top``)."""
    occurrences = np.bincount(top.ravel())
    return float((1.0 / occurrences[top]).mean())


def mean_pairwise(top: np.ndarray, pair_score) -> float:
    """Mean over topics of the mean of ``pair_score(i, j)`` over pairs of the topic's top words."""
    per_topic = [np.mean([pair_score(i, j) for i, j in itertools.combinations(words, 2)]) for words in top
                 if len(words) > 1]
    return float(np.mean(per_topic)) if per_topic else 0.0


class RandomIndexEmbeddings:
    """Word embeddings learnt from the training documents by random indexing (see module doc)."""

    def __init__(self, feature_dim: int, seed: list[int]) -> None:
        self.vectors = np.zeros((feature_dim, EMBEDDING_DIM))
        self.rng = np.random.default_rng(seed)

    def add(self, features: Features) -> None:
        """Add a minibatch of documents (dense or CSR)."""
        signs = self.rng.integers(0, 2, size=(features.shape[0], EMBEDDING_DIM)) * 2.0 - 1.0
        self.vectors += np.asarray(features.T @ signs)

    def wetc(self, top: np.ndarray) -> float:
        norms = np.linalg.norm(self.vectors, axis=1)
        norms[norms == 0] = 1.0
        unit = self.vectors / norms[:, None]
        return mean_pairwise(top, lambda i, j: float(unit[i] @ unit[j]))


class CoOccurrence:
    """Document counts of the top words and of their pairs, over a stream of minibatches."""

    def __init__(self, top: np.ndarray) -> None:
        self.words = np.unique(top)
        self.column = {word: c for c, word in enumerate(self.words)}
        self.documents = 0
        self.pairs = np.zeros((len(self.words), len(self.words)))

    def add(self, features: Features) -> None:
        present = (sp.csr_matrix(features)[:, self.words] > 0).astype(np.float64)
        self.pairs += (present.T @ present).toarray()
        self.documents += features.shape[0]

    def npmi(self, top: np.ndarray) -> float:
        n = max(self.documents, 1)
        single = np.diag(self.pairs) / n

        def score(i: int, j: int) -> float:
            a, b = self.column[i], self.column[j]
            joint = self.pairs[a, b] / n
            if joint == 0:
                return -1.0
            if joint == 1:
                return 1.0
            return float(np.log(joint / (single[a] * single[b])) / -np.log(joint))

        return mean_pairwise(top, score)
