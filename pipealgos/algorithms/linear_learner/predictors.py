"""The predictor types and the losses each one trains with: algorithm knowledge the schema
(``platform/schemas/linear_learner.py``) and the SageMaker-artifact reader both check against.
Imports nothing, so the schema can read it without loading torch."""

PREDICTOR_TYPES = ("binary_classifier", "multiclass_classifier", "regressor")
LOSSES = {
    "binary_classifier": ("auto", "logistic", "hinge_loss"),
    "multiclass_classifier": ("auto", "softmax_loss"),
    "regressor": ("auto", "squared_loss", "absolute_loss", "eps_insensitive_squared_loss",
                  "eps_insensitive_absolute_loss", "quantile_loss", "huber_loss"),
}
