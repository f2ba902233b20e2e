"""LDA by the spectral method (SageMaker's ``lda``, algorithms.md section 3).

Anandkumar, Ge, Hsu, Kakade, Telgarsky (JMLR 2014): the first three moments of the word
counts, whitened by the second, form an orthogonal tensor whose components are the topics.

* :mod:`.moments`: the moments as sums (minibatches and hosts add up; nothing V×V is
  formed); :mod:`.training` reads ``train`` once (see :func:`.training.train`).
* :mod:`.decomposition`: whitening from the top ceil(1.25·num_topics) eigenpairs of M2, ALS
  with restarts, unwhitening to alpha and beta.
* :mod:`.refinement`: a few variational EM passes over the first documents held in memory
  (at most 1,000,000 stored entries), from the spectral α and β; β refined, α kept. Always
  on, no hyperparameter (SageMaker's table is unchanged); skipped when those documents hold
  under 5 % of the corpus's tokens (large corpora, where the moments are accurate).
* :mod:`.inference`: ``topic_mixture`` per document and the test metric.
* :mod:`.training`: ``train``.

Choices where SageMaker says nothing:

* Non-integer counts (tf-idf-like weights) are accepted; the moment estimators are then no
  longer unbiased but stay well defined. Negative, NaN or infinite counts are errors naming
  the record. Empty documents are skipped and counted; documents of one or two words count
  for the moments they can estimate (E1; E1 and E2).
* ``test pwll`` is document completion: each test document's tokens are dealt alternately
  into two halves, the topic mixture is fitted on the first and the second half is scored;
  the metric is Σ log p(word) / Σ words scored (natural log, higher is better).
"""

from .model import LDAModel
from .training import NAME, train

__all__ = ["NAME", "LDAModel", "train"]
