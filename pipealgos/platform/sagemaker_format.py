"""How an algorithm's model looks in SageMaker's own format (``model_algo-1`` and its kin).

An :class:`~pipealgos.platform.registry.AlgorithmSpec` whose SageMaker layout is known sets
``sagemaker_format`` to a :class:`SageMakerFormat`: three functions the algorithm's module
defines next to its model (they know its arrays), working on the *files* of a SageMaker
``model.tar.gz`` (``{"model_algo-1": bytes, ...}``) rather than on paths, so the same code
serves ``serve``, ``import-model``, ``export-model`` and ``train``.

Errors in what a file holds are :class:`~pipealgos.io.DataError` from the functions (they use
the IO layer's readers) and reach users as :class:`SageMakerModelError` (a
:class:`~pipealgos.platform.model_store.ModelFormatError`, which ``serve`` reports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .model_store import ModelFormatError

ModelFiles = dict[str, bytes]  # file name in model.tar.gz -> content


class SageMakerModelError(ModelFormatError):
    """Files that are not a SageMaker model of the algorithm they were read as."""


@dataclass(frozen=True)
class SageMakerFormat:
    """``export(arrays, resolved_hyperparameters) -> files``: our model as the files of
    SageMaker's ``model.tar.gz``. ``load(files) -> (arrays, hyperparameters)``: the arrays our
    model type's ``from_arrays`` takes and the hyperparameters the files tell (at least those
    ``from_arrays`` needs, plus ``feature_dim``). ``recognises(files)``: whether the files have
    this algorithm's layout (cheap, no full validation), to find the algorithm of a model
    nobody named."""

    export: Callable[[dict[str, np.ndarray], dict[str, Any]], ModelFiles]
    load: Callable[[ModelFiles], tuple[dict[str, np.ndarray], dict[str, Any]]]
    recognises: Callable[[ModelFiles], bool]

