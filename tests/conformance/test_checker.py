"""``pipealgos.testing.check_algorithm`` over every registered algorithm, one test per check,
plus the checker catching what it exists to catch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from toy_algorithm import SPEC as TOY
from toy_algorithm import ToyModel

from pipealgos.platform.registry import ALGORITHMS
from pipealgos.testing import CHECKS, ConformanceError, check_algorithm, check_no_mutation, check_seeds

SPECS = [*ALGORITHMS.values(), TOY]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_algorithm_passes(spec, check):
    check(spec)


def test_check_algorithm_reports_every_failure():
    """A toy that ignores its seed and declares itself randomised fails the seed check; one
    that writes into its input fails the mutation check; check_algorithm names both."""

    def careless(params, ctx):
        for batch in ctx.channels.minibatches("train", 0, 100):
            batch.features *= 1.0 + 1e-3  # writes into the minibatch it was given
        return ToyModel(np.zeros((2, params.feature_dim)))

    spec = dataclasses.replace(TOY, name="careless", train=careless)
    with pytest.raises(ConformanceError) as info:
        check_seeds(spec)
    assert "seeds 0 and 1 trained the same model" in str(info.value)
    with pytest.raises(ConformanceError, match="training changed minibatch 0 of channel 'train'"):
        check_no_mutation(spec)
    with pytest.raises(ConformanceError) as info:
        check_algorithm(spec)
    assert "quality" in str(info.value) and "seeds" in str(info.value) and "no_mutation" in str(info.value)
