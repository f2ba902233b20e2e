"""Random cut forest hyperparameters (algorithms.md section 7).

``mini_batch_size``: the SDK always sends 1000 and refuses any other value client-side; the
container is the contract, so any positive size is accepted (it only sets how many records
are read at a time, never the model). ``eval_metrics`` defaults to both metric groups, as the
developer guide says.
"""

from ..hyperparameters import Param, Schema

EVAL_METRICS = ("accuracy", "precision_recall_fscore")

SCHEMA = Schema(
    algorithm="randomcutforest",
    params=(
        Param("feature_dim", int, required=True, low=1, high=10000),
        Param("num_trees", int, default=100, low=50, high=1000),
        Param("num_samples_per_tree", int, default=256, low=1, high=2048),
        Param("eval_metrics", list, default=list(EVAL_METRICS), choices=EVAL_METRICS),
        Param("mini_batch_size", int, default=1000, low=1),
    ),
)
