"""Linear learner building blocks against independent references: loss gradients against
autograd, the batched optimizer against torch.optim, the l1 proximal step against its closed
form, folding of the normaliser, threshold calibration against brute force, the model grid
rule, the hyperparameter schema, and `predict`'s outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipealgos.algorithms.linear_learner import LinearLearnerModel
from pipealgos.algorithms.linear_learner.evaluation import EDGES, Evaluator, MetricSettings
from pipealgos.algorithms.linear_learner.losses import LossSettings, make_loss
from pipealgos.algorithms.linear_learner.optimizer import BatchedOptimizer, StepSettings
from pipealgos.algorithms.linear_learner.params import model_grid, resolve
from pipealgos.algorithms.linear_learner.scaling import Scaler, sample_sums
from pipealgos.io import Minibatch
from pipealgos.platform.hyperparameters import HyperparameterError
from pipealgos.platform.registry import get_algorithm
from pipealgos.platform.schemas.linear_learner import SCHEMA

LOSSES = [("logistic", 1), ("hinge_loss", 1), ("softmax_loss", 5), ("squared_loss", 1), ("absolute_loss", 1),
          ("eps_insensitive_squared_loss", 1), ("eps_insensitive_absolute_loss", 1), ("quantile_loss", 1),
          ("huber_loss", 1)]


@pytest.mark.parametrize("name, outputs", LOSSES)
def test_loss_gradient_matches_autograd(name, outputs):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(64, 3, outputs, generator=gen, dtype=torch.float64) * 2
    if name == "softmax_loss":
        y = torch.randint(0, outputs, (64,), generator=gen).double()
    elif name in ("logistic", "hinge_loss"):
        y = torch.randint(0, 2, (64,), generator=gen).double()
    else:
        y = torch.randn(64, generator=gen, dtype=torch.float64)
    settings = LossSettings(margin=0.7, quantile=0.3, insensitivity=0.2, huber_delta=0.5)
    loss, grad = make_loss(name, settings)(pred, y)
    leaf = pred.clone().requires_grad_(True)
    make_loss(name, settings)(leaf, y)[0].sum().backward()
    assert loss.shape == (64, 3)
    torch.testing.assert_close(grad, leaf.grad)


def test_loss_values_match_textbook_formulas():
    r = torch.tensor([-2.0, -0.1, 0.0, 0.3, 3.0], dtype=torch.float64)
    pred, y = r[:, None, None], torch.zeros(5, dtype=torch.float64)
    s = LossSettings(quantile=0.3, insensitivity=0.2, huber_delta=1.0)
    check = {
        "squared_loss": r**2,
        "absolute_loss": r.abs(),
        "eps_insensitive_absolute_loss": (r.abs() - 0.2).clamp_min(0),
        "quantile_loss": torch.where(r < 0, 0.3 * -r, 0.7 * r),
        "huber_loss": torch.where(r.abs() <= 1, 0.5 * r**2, r.abs() - 0.5),
    }
    for name, expected in check.items():
        torch.testing.assert_close(make_loss(name, s)(pred, y)[0][:, 0], expected, msg=name)
    margins = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)[:, None, None]
    labels = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(make_loss("hinge_loss", LossSettings(margin=1.0))(margins, labels)[0][:, 0],
                               torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(make_loss("logistic", s)(margins, labels)[0][:, 0],
                               torch.log1p(torch.exp(-(2 * labels - 1) * margins[:, 0, 0])))


def _settings(**kw) -> StepSettings:
    base = dict(momentum=0.9, beta_1=0.9, beta_2=0.999, bias_lr_mult=1.0, bias_wd_mult=1.0, use_bias=True,
                use_scheduler=False, scheduler_step=100, scheduler_factor=0.99, scheduler_minimum_lr=1e-5)
    return StepSettings(**{**base, **kw})


@pytest.mark.parametrize("name, reference", [
    ("sgd", lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd)),
    ("adam", lambda p, lr, wd: torch.optim.Adam(p, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)),
    ("rmsprop", lambda p, lr, wd: torch.optim.RMSprop(p, lr=lr, alpha=0.95, eps=1e-8, weight_decay=wd)),
])
def test_each_model_follows_torch_optim(name, reference):
    """Three models with different rates and weight decays, one tensor, against three
    separate torch.optim optimizers."""
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(6, 3, 2, generator=gen, dtype=torch.float64)
    rates, decays = np.array([0.1, 0.01, 0.05]), np.array([0.0, 0.1, 0.01])
    separate = [theta[:, m].clone().requires_grad_(True) for m in range(3)]
    optims = [reference([p], rates[m], decays[m]) for m, p in enumerate(separate)]
    batched = BatchedOptimizer(theta, (name,) * 3, rates, decays, np.zeros(3), _settings())
    for _ in range(5):
        grad = torch.randn(6, 3, 2, generator=gen, dtype=torch.float64)
        batched.step(theta, grad)
        for m, (p, opt) in enumerate(zip(separate, optims)):
            p.grad = grad[:, m].clone()
            opt.step()
    for m in range(3):
        torch.testing.assert_close(theta[:, m], separate[m].detach())


def test_mixed_optimizers_l1_proximal_step_bias_multipliers_and_schedule():
    theta = torch.zeros(3, 2, 1, dtype=torch.float64)
    theta[:, :, 0] = torch.tensor([[0.5, 0.5], [-0.02, -0.02], [1.0, 1.0]])  # rows: w0, w1, bias
    s = _settings(momentum=0.0, bias_lr_mult=10.0, bias_wd_mult=0.0, use_scheduler=True, scheduler_step=1,
                  scheduler_factor=0.5, scheduler_minimum_lr=0.02)
    opt = BatchedOptimizer(theta, ("sgd", "sgd"), np.array([0.1, 0.1]), np.array([0.0, 0.0]), np.array([0.0, 0.3]), s)
    grad = torch.zeros_like(theta)
    grad[-1] = 1.0
    opt.step(theta, grad)  # t=1: rate 0.1 * 0.5 = 0.05
    # Model 0: no l1. Model 1: soft threshold by rate*l1 = 0.015; |-0.02| -> 0.005; bias never shrunk.
    torch.testing.assert_close(theta[:, 0, 0], torch.tensor([0.5, -0.02, 1.0 - 0.5], dtype=torch.float64))
    torch.testing.assert_close(theta[:, 1, 0], torch.tensor([0.485, -0.005, 1.0 - 0.5], dtype=torch.float64))
    opt.step(theta, torch.zeros_like(theta))  # t=2: 0.1 * 0.25 = 0.025
    opt.step(theta, torch.zeros_like(theta))  # t=3: 0.0125, floored at 0.02
    assert opt.rates().flatten().tolist() == pytest.approx([0.02, 0.02])


def test_folded_model_predicts_what_the_normalised_model_does():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(200, 4)) * [1, 10, 0.1, 5] + [3, -2, 0, 100]).astype(np.float32)
    x[:, 2] = 7.0  # a constant feature keeps scale 1
    y = (x @ [1, 2, 3, 4] + 50).astype(np.float32)
    scaler = Scaler.from_sums(sample_sums(Minibatch(x, y), 4), 4, True, True, True, True)
    theta = torch.from_numpy(rng.normal(size=(5, 1))).float()
    normalised = scaler.features(torch.from_numpy(x)).double() @ theta[:4].double() + theta[4].double()
    expected = normalised * scaler.label_scale + scaler.label_shift
    weight, bias = scaler.fold(theta)
    np.testing.assert_allclose(x.astype(np.float64) @ weight + bias, expected.numpy(), rtol=1e-4, atol=1e-3)
    assert scaler.inv_scale[2] == 1.0
    assert scaler.label_scale == pytest.approx(np.std(y.astype(np.float64)), rel=1e-4)


@pytest.mark.parametrize("criterion", ["accuracy", "f_beta", "precision_at_target_recall",
                                       "recall_at_target_precision"])
def test_calibration_matches_brute_force_over_thresholds(criterion):
    rng = np.random.default_rng(4)
    y = (rng.random(3000) < 0.3).astype(np.float32)
    margins = (rng.normal(size=(3000, 2)) + 1.5 * y[:, None] * [1.0, 2.0]).astype(np.float32)
    s = MetricSettings("binary_classifier", "logistic", criterion, f_beta=2.0, target_recall=0.9,
                       target_precision=0.7)
    evaluator = Evaluator(2, 1, s)
    pred = torch.from_numpy(margins)[..., None]
    evaluator.add(pred, torch.from_numpy(y), torch.zeros(3000, 2))
    metric, thresholds = evaluator.selection()
    for m in range(2):
        best = -1.0
        for t in EDGES:
            predicted = margins[:, m] > t
            tp = float((predicted & (y == 1)).sum())
            precision = tp / max(predicted.sum(), 1)
            recall = tp / (y == 1).sum()
            f2 = 5 * precision * recall / (4 * precision + recall) if tp else 0.0
            value = {"accuracy": (predicted == (y == 1)).mean(), "f_beta": f2,
                     "precision_at_target_recall": precision if recall >= 0.9 else -1,
                     "recall_at_target_precision": recall if precision >= 0.7 else -1}[criterion]
            best = max(best, value)
        assert metric[m] == pytest.approx(best, abs=1e-9)
        chosen = margins[:, m] > thresholds[m]
        if criterion == "precision_at_target_recall":
            assert chosen[y == 1].mean() >= 0.9


def test_model_grid_keeps_the_given_settings_first_and_spreads_the_rest():
    values = SCHEMA.parse({"predictor_type": "binary_classifier", "num_models": "12"})
    p = SCHEMA.to_params(values)
    r = resolve(p)
    grid = model_grid(p, r)
    assert grid.optimizer[0] == "adam" and grid.learning_rate[0] == 0.01 and grid.wd[0] == 0 and grid.l1[0] == 0
    assert set(grid.optimizer) == {"adam", "sgd", "rmsprop"}
    assert len(set(np.round(grid.learning_rate, 12))) == 12
    assert (grid.wd > 0).any() and (grid.wd == 0).any()
    assert np.all((grid.learning_rate >= 0.1 * 0.01 - 1e-12) & (grid.learning_rate <= 10 * 0.1 + 1e-12))
    given = SCHEMA.to_params(SCHEMA.parse({"predictor_type": "regressor", "num_models": "6",
                                                        "optimizer": "sgd", "learning_rate": "0.2", "wd": "0"}))
    grid = model_grid(given, resolve(given))
    assert set(grid.optimizer) == {"sgd"} and grid.learning_rate[0] == 0.2 and np.all(grid.wd == 0)
    assert np.all((grid.learning_rate >= 0.2 / 10**0.5) & (grid.learning_rate <= 0.2 * 10**0.5))
    np.testing.assert_array_equal(model_grid(given, resolve(given)).learning_rate, grid.learning_rate)


def test_auto_values_resolve_to_the_recorded_defaults():
    r = resolve(SCHEMA.to_params(SCHEMA.parse({"predictor_type": "regressor"})))
    assert (r.num_models, r.optimizer, r.lr_scheduler_step, r.lr_scheduler_factor, r.lr_scheduler_minimum_lr,
            r.bias_lr_mult, r.bias_wd_mult, r.momentum, r.beta_1, r.beta_2) == (
        32, "adam", 100, 0.99, 1e-5, 10.0, 0.0, 0.0, 0.9, 0.999)
    assert r.loss == "squared_loss" and r.normalize_label and r.unbias_label and r.unbias_data
    binary = resolve(SCHEMA.to_params(SCHEMA.parse(
        {"predictor_type": "binary_classifier", "use_bias": "False",
         "binary_classifier_model_selection_criteria": "f1"})))
    assert binary.loss == "logistic" and not binary.normalize_label and not binary.unbias_data
    assert binary.criterion == "f_beta"


@pytest.mark.parametrize("hyperparameters, fragment", [
    ({}, "Missing required hyperparameter 'predictor_type'"),
    ({"predictor_type": "ranker"}, "'predictor_type'"),
    ({"predictor_type": "regressor", "loss": "logistic"}, "does not apply to predictor_type 'regressor'"),
    ({"predictor_type": "multiclass_classifier"}, "'num_classes' (1) must be at least 3"),
    ({"predictor_type": "binary_classifier", "target_recall": "1.0"}, "'target_recall'"),
    ({"predictor_type": "binary_classifier", "momentum": "1"}, "'momentum'"),
    ({"predictor_type": "binary_classifier", "learning_rate": "0"}, "'learning_rate'"),
    ({"predictor_type": "binary_classifier", "positive_example_weight_mult": "0"}, "'positive_example_weight_mult'"),
    ({"predictor_type": "binary_classifier", "lr_scheduler_factor": "1"}, "'lr_scheduler_factor'"),
    ({"predictor_type": "regressor", "quantile": "0"}, "'quantile'"),
    ({"predictor_type": "regressor", "huber_delta": "0"}, "'huber_delta'"),
    ({"predictor_type": "regressor", "num_models": "0"}, "'num_models'"),
    ({"predictor_type": "regressor", "epochs": "auto"}, "'epochs'"),
    ({"predictor_type": "regressor", "bogus": "1"}, "Unknown hyperparameter"),
])
def test_schema_rejects_bad_hyperparameters_naming_them(hyperparameters, fragment):
    with pytest.raises(HyperparameterError) as err:
        SCHEMA.parse(hyperparameters)
    assert fragment in str(err.value)


def test_schema_accepts_sdk_and_doc_spellings():
    values = SCHEMA.parse({"predictor_type": "binary_classifier", "use_bias": "True", "normalize_data": "false",
                           "positive_example_weight_mult": "balanced", "num_models": "auto", "margin": "0",
                           "_tuning_objective_metric": "validation:objective_loss", "force_dense": "True"})
    assert values["use_bias"] is True and values["normalize_data"] is False
    assert values["positive_example_weight_mult"] == "balanced" and values["num_models"] == "auto"
    assert get_algorithm("linear_learner").name == "linear-learner"
    assert get_algorithm("382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1").channel("train").label_size == 1


def test_predict_outputs_per_predictor_type():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    w, b = np.array([[2.0], [-1.0]]), np.array([0.5])
    logistic = LinearLearnerModel("binary_classifier", "logistic", w, b, threshold=1.0).predict(x)
    np.testing.assert_allclose(logistic["score"], 1 / (1 + np.exp(-np.array([2.5, -0.5, 1.5]))), rtol=1e-6)
    np.testing.assert_array_equal(logistic["predicted_label"], [1.0, 0.0, 1.0])
    hinge = LinearLearnerModel("binary_classifier", "hinge_loss", w, b).predict(x)
    np.testing.assert_allclose(hinge["score"], [2.5, -0.5, 1.5])
    regression = LinearLearnerModel("regressor", "squared_loss", w, b).predict(x)
    assert set(regression) == {"score"} and regression["score"].shape == (3,)
    multi = LinearLearnerModel("multiclass_classifier", "softmax_loss", np.eye(2, 3), np.zeros(3)).predict(x)
    assert multi["score"].shape == (3, 3) and multi["predicted_label"].tolist() == [0.0, 1.0, 0.0]
    model = LinearLearnerModel("binary_classifier", "logistic", w, b, threshold=1.0)
    restored = LinearLearnerModel.from_arrays(model.to_arrays(), {"predictor_type": "binary_classifier",
                                                                  "loss": "auto"})
    assert restored.threshold == 1.0 and restored.loss == "logistic"


def test_mixed_optimizers_in_one_tensor_match_torch_optim():
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(4, 3, 1, generator=gen, dtype=torch.float64)
    separate = [theta[:, m].clone().requires_grad_(True) for m in range(3)]
    optims = [torch.optim.Adam([separate[0]], lr=0.05, eps=1e-8),
              torch.optim.SGD([separate[1]], lr=0.1, momentum=0.9),
              torch.optim.RMSprop([separate[2]], lr=0.01, alpha=0.95, eps=1e-8)]
    batched = BatchedOptimizer(theta, ("adam", "sgd", "rmsprop"), np.array([0.05, 0.1, 0.01]), np.zeros(3),
                               np.zeros(3), _settings())
    for _ in range(4):
        grad = torch.randn(4, 3, 1, generator=gen, dtype=torch.float64)
        batched.step(theta, grad)
        for m, opt in enumerate(optims):
            separate[m].grad = grad[:, m].clone()
            opt.step()
    for m in range(3):
        torch.testing.assert_close(theta[:, m], separate[m].detach())
    with pytest.raises(ValueError, match="not contiguous"):
        BatchedOptimizer(theta, ("adam", "sgd", "adam"), np.ones(3), np.zeros(3), np.zeros(3), _settings())


def test_only_the_first_calibration_rows_enter_the_threshold_histogram():
    s = MetricSettings("binary_classifier", "logistic", "accuracy", calibration_rows=150)
    evaluator = Evaluator(1, 1, s)
    for _ in range(2):
        pred = torch.linspace(-3, 3, 100)[:, None, None]
        evaluator.add(pred, (pred[:, 0, 0] > 0).float(), torch.ones(100, 1))
    assert evaluator.rows == 200 and evaluator.mean_loss()[0] == pytest.approx(1.0)
    assert float(evaluator.sums["pos"].sum() + evaluator.sums["neg"].sum()) == 150
