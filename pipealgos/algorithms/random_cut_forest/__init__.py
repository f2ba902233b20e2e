"""SageMaker's ``randomcutforest``: one-pass reservoir sampling of the train channel, one
random cut tree per sample part, and the RCF library's anomaly score, vectorised over all
trees (:mod:`.forest`). CPU only. Modules: :mod:`.sampling` (reservoir, multi-host merge),
:mod:`.forest` (build, flat arrays, score), :mod:`.model`, :mod:`.training`."""

from .model import RandomCutForestModel
from .training import train

NAME = "randomcutforest"

__all__ = ["NAME", "RandomCutForestModel", "train"]
