"""PCA hyperparameters (algorithms.md section 1)."""

from ..hyperparameters import Param, Schema


def _components_fit(values: dict) -> str | None:
    if values["num_components"] > values["feature_dim"]:
        return (f"Hyperparameter 'num_components' ({values['num_components']}) must not exceed "
                f"'feature_dim' ({values['feature_dim']}): lower num_components.")
    return None


SCHEMA = Schema(
    algorithm="pca",
    params=(
        Param("feature_dim", int, required=True, low=1),
        Param("mini_batch_size", int, required=True, low=1),
        Param("num_components", int, required=True, low=1),
        Param("algorithm_mode", str, default="regular", choices=("regular", "randomized")),
        Param("extra_components", int, default=-1, low=-1),
        Param("subtract_mean", bool, default=True),
    ),
    # The real container's defaults carry these; SDK and older notebooks send them.
    ignored=frozenset({"force_dense", "epochs"}),
    checks=(_components_fit,),
)
