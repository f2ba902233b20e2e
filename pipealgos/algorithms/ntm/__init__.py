"""SageMaker's neural topic model (``ntm``, algorithms.md section 6): a variational
autoencoder on bag-of-words documents (Miao et al. 2016), built as the graph of a real
model's ``symbol.json`` (see :mod:`.network`), trained by :mod:`.training`, scored by
:mod:`.topics` (top words, TU, WETC, test NPMI) when the ``auxiliary`` channel gives
``vocab.txt``.

Inference statistic (SageMaker does not document it): ``topic_weights`` = softmax over topics
of relu(μ), the encoder mean passed through the same relu that forms z, without sampling, so
a document always gets the same weights; they are positive and sum to 1 (as the published
SageMaker responses do), and their argmax is the topic of the largest relu(μ).
"""

from .model import NTMModel
from .training import NAME, train

__all__ = ["NAME", "NTMModel", "train"]
