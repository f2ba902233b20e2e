"""Factorization machines as SageMaker's ``factorization-machines`` container trains them
(algorithms.md section 4): a degree-2 FM, ``binary_classifier`` (log loss on the sigmoid) or
``regressor`` (squared loss), sparse input kept sparse from the reader to the update.

Modules: ``compute`` (the O(k·nnz) forward pass and its gradient on a minibatch's non-zeros),
``optimizer`` (AdaGrad on the rows a minibatch touches, per-term settings), ``training`` (the
job, metrics, hosts), ``model`` (the stored model and ``predict``).
"""

from .model import FactorizationMachineModel
from .training import train

NAME = "factorization-machines"

__all__ = ["NAME", "FactorizationMachineModel", "train"]
