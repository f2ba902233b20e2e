"""Factorization machines hyperparameters (algorithms.md section 4).

Every name, default and range of the spec's table. Where the guide leaves a case open:

* ``*_init_method=uniform`` needs its ``*_init_scale`` and ``constant`` its ``*_init_value``
  (both default to None in the guide, and no value is a sensible guess): a job that names the
  method without the number is refused, naming both parameters.
* ``clip_gradient``, ``eps`` and ``rescale_grad`` must be > 0 when given. Left unset they mean:
  no clipping, eps = 1e-7 (MXNet AdaGrad's stability constant), and rescale_grad = 1 / (rows of
  the minibatch, over all hosts), i.e. the mean gradient.
"""

from ..hyperparameters import Param, Schema

PREDICTOR_TYPES = ("binary_classifier", "regressor")
INIT_METHODS = ("normal", "uniform", "constant")
TERMS = ("bias", "linear", "factors")

# The guide's defaults per term: learning rate, weight decay, normal sigma.
_DEFAULTS = {"bias": (0.1, 0.01, 0.01), "linear": (0.001, 0.001, 0.01), "factors": (0.0001, 0.00001, 0.001)}


def _term_params(term: str) -> tuple[Param, ...]:
    lr, wd, sigma = _DEFAULTS[term]
    return (
        Param(f"{term}_lr", float, default=lr, low=0),
        Param(f"{term}_wd", float, default=wd, low=0),
        Param(f"{term}_init_method", str, default="normal", choices=INIT_METHODS),
        Param(f"{term}_init_sigma", float, default=sigma, low=0),
        Param(f"{term}_init_scale", float, default=None, low=0),
        Param(f"{term}_init_value", float, default=None),
    )


def _init_has_its_number(term: str):
    def check(values: dict) -> str | None:
        method = values[f"{term}_init_method"]
        needed = {"uniform": f"{term}_init_scale", "constant": f"{term}_init_value"}.get(method)
        if needed and values[needed] is None:
            return (f"Hyperparameter '{term}_init_method' is {method!r} but '{needed}' is not set: "
                    f"set {needed} (or use {term}_init_method=normal with {term}_init_sigma).")
        return None
    return check


SCHEMA = Schema(
    algorithm="factorization-machines",
    params=(
        Param("feature_dim", int, required=True, low=1),
        Param("num_factors", int, required=True, low=1),
        Param("predictor_type", str, required=True, choices=PREDICTOR_TYPES),
        Param("epochs", int, default=1, low=1),
        Param("mini_batch_size", int, default=1000, low=1),
        *(param for term in TERMS for param in _term_params(term)),
        Param("clip_gradient", float, default=None, low=0, low_open=True),
        Param("eps", float, default=None, low=0, low_open=True),
        Param("rescale_grad", float, default=None, low=0, low_open=True),
    ),
    checks=tuple(_init_has_its_number(term) for term in TERMS),
)
