"""LDA hyperparameters (algorithms.md section 3).

``alpha0`` defaults to 1.0 as the developer guide says (sagemaker-spark's comment says 0.1;
the guide is the source of truth here). ``mini_batch_size`` is required as the SDK requires
it, but the guide's "total number of documents in the corpus" is not assumed: it only sets how
many documents each streamed step holds, and the model does not depend on it.
"""

from ..hyperparameters import Param, Schema


def _topics_fit_vocabulary(values: dict) -> str | None:
    if values["num_topics"] > values["feature_dim"]:
        return (f"Hyperparameter 'num_topics' ({values['num_topics']}) must not exceed 'feature_dim' "
                f"({values['feature_dim']}, the vocabulary size): a topic is a distribution over words, and "
                f"more topics than words cannot be told apart. Lower num_topics.")
    return None


SCHEMA = Schema(
    algorithm="lda",
    params=(
        Param("num_topics", int, required=True, low=1),
        Param("feature_dim", int, required=True, low=1),
        Param("mini_batch_size", int, required=True, low=1),
        Param("alpha0", float, default=1.0, low=0, low_open=True),
        Param("max_restarts", int, default=10, low=1),
        Param("max_iterations", int, default=1000, low=1),
        Param("tol", float, default=1e-8, low=0, low_open=True),
    ),
    ignored=frozenset({"force_dense", "epochs"}),
    checks=(_topics_fit_vocabulary,),
)
