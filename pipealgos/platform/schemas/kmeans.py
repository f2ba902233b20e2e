"""k-means hyperparameters (algorithms.md section 2).

``k`` follows the developer guide (> 0) rather than the SDK's client-side check (> 1): the
container is the contract, and k = 1 (the mean) is a well-defined model.
"""

from ..hyperparameters import Param, Schema

SCHEMA = Schema(
    algorithm="kmeans",
    params=(
        Param("feature_dim", int, required=True, low=1),
        Param("k", int, required=True, low=1),
        Param("mini_batch_size", int, default=5000, low=1),
        Param("epochs", int, default=1, low=1),
        Param("init_method", str, default="random", choices=("random", "kmeans++")),
        Param("extra_center_factor", int, default="auto", low=1, auto=True),
        Param("local_lloyd_init_method", str, default="kmeans++", choices=("random", "kmeans++")),
        Param("local_lloyd_max_iter", int, default=300, low=1),
        Param("local_lloyd_num_trials", int, default="auto", low=1, auto=True),
        Param("local_lloyd_tol", float, default=0.0001, low=0, high=1),
        Param("half_life_time_size", int, default=0, low=0),
        Param("eval_metrics", list, default=["msd"], choices=("msd", "ssd")),
    ),
    # The SDK always sends force_dense="True"; input is densified whatever its value.
    ignored=frozenset({"force_dense"}),
)
