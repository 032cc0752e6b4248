"""The training loop's pure parts: metrics against scikit-learn, schedules, the model zoo."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error, r2_score, roc_auc_score

from raymlp.config.schema import ModelConfig, TrainConfig
from raymlp.train.metrics import MetricSpec
from raymlp.train.models import build_model
from raymlp.train.schedules import lr_multiplier


@pytest.mark.parametrize("classes", [2, 5])
def test_classification_metrics_summed_over_shards_match_sklearn(classes):
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randn(4000, classes, generator=generator)
    labels = torch.randint(0, classes, (4000,), generator=generator)
    logits[torch.arange(4000), labels] += 1.0
    spec = MetricSpec("classification", classes)
    # Two "workers" each sum their shard; the all-reduce is a plain sum.
    sums = spec.sums(logits[:1500], labels[:1500]) + spec.sums(logits[1500:], labels[1500:])
    metrics = spec.summarize(sums, "valid", detailed=True)

    probs = torch.softmax(logits, 1).numpy()
    auc = roc_auc_score(labels, probs[:, 1]) if classes == 2 else roc_auc_score(labels, probs, multi_class="ovr")
    f1 = f1_score(labels, logits.argmax(1), average="binary" if classes == 2 else "macro")
    assert metrics["valid_auc"] == pytest.approx(auc, abs=1e-3)
    assert metrics["valid_f1"] == pytest.approx(f1, abs=1e-9)
    assert metrics["valid_accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert metrics["valid_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)


def test_regression_metrics_are_in_label_units():
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(1000, 1, generator=generator)
    targets = outputs[:, 0] + 0.3 * torch.randn(1000, generator=generator)
    spec = MetricSpec("regression", 1, label_scale=10.0)
    metrics = spec.summarize(spec.sums(outputs, targets), "valid", detailed=True)

    assert metrics["valid_r2"] == pytest.approx(r2_score(targets, outputs[:, 0]), abs=1e-6)
    assert metrics["valid_mae"] == pytest.approx(10 * mean_absolute_error(targets, outputs[:, 0]), rel=1e-6)
    assert metrics["valid_rmse"] == pytest.approx(10 * ((outputs[:, 0] - targets) ** 2).mean().sqrt().item(), rel=1e-5)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_training_tally_over_batches_gives_the_epoch_loss_and_accuracy(task):
    generator = torch.Generator().manual_seed(1)
    classes = 3 if task == "classification" else 1
    outputs = torch.randn(1000, classes, generator=generator)
    targets = torch.randint(0, 3, (1000,), generator=generator) if classes > 1 else torch.randn(1000, generator=generator)
    spec = MetricSpec(task, classes)
    tally = spec.tally(torch.device("cpu"))
    for out, y in zip(outputs.split(96), targets.split(96)):  # the last batch is short
        tally.add(out, y, spec.loss(out, y))
    metrics = spec.summarize(tally.sums(), "train", detailed=False)
    assert metrics["train_loss"] == pytest.approx(spec.loss(outputs, targets).item(), rel=1e-6)
    if task == "classification":
        assert metrics["train_accuracy"] == pytest.approx((outputs.argmax(1) == targets).double().mean().item())
    else:
        assert set(metrics) == {"train_loss"}


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear", "onecycle"])
def test_schedules_warm_up_peak_and_stay_bounded_past_the_end(schedule):
    cfg = TrainConfig(epochs=4, schedule=schedule, warmup_epochs=1)
    multiplier = lr_multiplier(cfg, steps_per_epoch=10)
    values = [multiplier(step) for step in range(60)]  # 20 steps past the planned 40
    assert max(values) == pytest.approx(1.0, abs=0.01)
    assert all(0.0 <= v <= 1.0 for v in values)
    if schedule != "onecycle":
        assert values[0] == pytest.approx(0.1)  # linear warmup over the first epoch
    if schedule in ("cosine", "linear"):
        assert values[39] < 0.05 and values[59] == values[40]
    if schedule == "onecycle":
        assert values[0] < 0.1 and values[12] == pytest.approx(1.0, abs=0.01) and values[59] < 0.01


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(name="mlp", hidden_sizes=[8]),
        ModelConfig(name="resmlp", hidden_sizes=[16, 16, 8]),
        ModelConfig(name="cnn", image_shape=(1, 4, 4), channels=[4, 8], hidden_sizes=[8]),
    ],
)
def test_zoo_models_map_features_to_outputs(cfg):
    model = build_model(cfg, 16, 3)
    assert model(torch.randn(5, 16)).shape == (5, 3)


def test_cnn_image_shape_must_match_the_features():
    with pytest.raises(ValueError, match="image_shape"):
        build_model(ModelConfig(name="cnn", image_shape=(1, 8, 8)), 63, 10)


def test_user_models_load_by_import_path_with_clear_errors():
    with pytest.raises(ValueError, match="cannot import 'no_such_package.models'"):
        build_model(ModelConfig(name="no_such_package.models:factory"), 4, 2)
    with pytest.raises(ValueError, match="has no callable 'missing'"):
        build_model(ModelConfig(name="raymlp.train.models:missing"), 4, 2)
    built = build_model(ModelConfig(name="raymlp.train.models:build_resmlp", hidden_sizes=[8]), 4, 2)
    assert built(torch.randn(3, 4)).shape == (3, 2)


def test_model_names_are_checked_at_config_load():
    with pytest.raises(ValueError, match="neither one of mlp, resmlp, cnn nor an import path"):
        ModelConfig(name="transformer")
    with pytest.raises(ValueError, match="needs `image_shape"):
        ModelConfig(name="cnn")
