"""Neural topic model hyperparameters (algorithms.md section 6).

``clip_gradient`` defaults to the word ``infinity`` (the docs' "Infinity"): a float parameter
refuses values beyond float32, and a manifest must stay plain JSON, so no clipping is spelled
as a word (``infinity`` or ``inf``) rather than as a number. ``encoder_layers`` is ``auto``
(= [3·num_topics, 2·num_topics]) or a list of layer widths, JSON (``[30, 20]``) or comma
(``30,20``), of at least one layer.
"""

from ..hyperparameters import Param, Schema

NO_CLIPPING = ("infinity", "inf")


def _at_least_one_layer(values: dict) -> str | None:
    if values["encoder_layers"] == []:
        return ("Hyperparameter 'encoder_layers' is an empty list: give at least one layer width (e.g. [30, 20]) "
                "or auto.")
    return None

SCHEMA = Schema(
    algorithm="ntm",
    params=(
        Param("feature_dim", int, required=True, low=1, high=1_000_000),
        Param("num_topics", int, required=True, low=2, high=1000),
        Param("mini_batch_size", int, default=256, low=1, high=10000),
        Param("epochs", int, default=50, low=1),
        Param("encoder_layers", list, default="auto", auto=True, item_kind=int, low=1),
        Param("encoder_layers_activation", str, default="sigmoid", choices=("sigmoid", "tanh", "relu")),
        Param("optimizer", str, default="adadelta", choices=("sgd", "adam", "adagrad", "rmsprop", "adadelta")),
        Param("learning_rate", float, default=0.001, low=1e-6, high=1.0),
        Param("batch_norm", bool, default=False),
        Param("clip_gradient", float, default="infinity", low=1e-3, extra_words=NO_CLIPPING),
        Param("rescale_gradient", float, default=1.0, low=1e-3, high=1.0),
        Param("weight_decay", float, default=0.0, low=0.0, high=1.0),
        Param("num_patience_epochs", int, default=3, low=1),
        Param("tolerance", float, default=0.001, low=1e-6, high=0.1),
        Param("sub_sample", float, default=1.0, low=0.0, low_open=True, high=1.0),
    ),
    checks=(_at_least_one_layer,),
)
