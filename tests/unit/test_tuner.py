"""Search and scheduler choice and the Pareto front, without running a search."""

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule
from ray.tune.search import BasicVariantGenerator

from raymlp.config import ConfigError, parse_config
from raymlp.config.schema import TuneConfig
from raymlp.tune.tpe import TPESearch
from raymlp.tune.tuner import build_scheduler, build_searcher, pareto_front

BASE = {"name": "t", "data": {"path": "d", "label": "y"}}


def tune_config(**tune) -> TuneConfig:
    return parse_config({**BASE, "tune": tune}).tune


def test_multi_objective_optuna_keeps_every_metric_and_mode():
    searcher = build_searcher(tune_config(objectives=["model_params", "latency_ms"]), seed=0, concurrency=2)
    assert isinstance(searcher, TPESearch)
    assert searcher._metrics == ["valid_accuracy", "model_params", "latency_ms"]
    assert searcher._directions == ["maximize", "minimize", "minimize"]


@pytest.mark.parametrize(
    "tune, startup",
    [({"num_samples": 16}, 4), ({"num_samples": 4}, 2), ({"num_samples": 200}, 10), ({"num_samples": 16, "startup_trials": 7}, 7)],
)
def test_tpe_samples_at_random_for_a_quarter_of_the_budget_then_models_it(tune, startup):
    searcher = build_searcher(tune_config(**tune), seed=0, concurrency=2)
    assert searcher._startup_trials == startup  # Optuna's default of 10 whatever the budget


@pytest.mark.parametrize("searcher", ["random", "grid"])
def test_random_and_grid_use_tunes_variant_generator_with_the_concurrency_limit(searcher):
    generator = build_searcher(tune_config(searcher=searcher), seed=0, concurrency=3)
    assert isinstance(generator, BasicVariantGenerator)
    assert generator.max_concurrent == 3  # Tune ignores max_concurrent_trials for a variant generator


@pytest.mark.parametrize("name, cls", [("asha", ASHAScheduler), ("median", MedianStoppingRule), ("none", FIFOScheduler)])
def test_schedulers_by_name(name, cls):
    assert isinstance(build_scheduler(tune_config(scheduler=name), max_epochs=5), cls)


@pytest.mark.parametrize(
    "tune, field",
    [
        ({"searcher": "random", "objectives": ["model_params"]}, "searcher: optuna"),
        ({"searcher": "grid", "space": {"train.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}}, "tune.space.train.lr"),
        ({"space": {"model.hidden_sizes": {"type": "choice", "values": [[8]], "q": 2}}}, "choice takes none"),
        ({"objectives": ["size"]}, "tune.objectives.0"),
    ],
)
def test_bad_search_settings_are_named(tune, field):
    with pytest.raises(ConfigError, match=field):
        parse_config({**BASE, "tune": tune})


def test_pareto_front_keeps_every_undominated_trade_off():
    cfg = tune_config(objectives=["model_params"])
    points = [
        {"valid_accuracy": 0.90, "model_params": 1000},  # best accuracy
        {"valid_accuracy": 0.85, "model_params": 100},  # smallest
        {"valid_accuracy": 0.84, "model_params": 500},  # dominated by the second
        {"valid_accuracy": 0.88, "model_params": 400},  # a trade-off between them
    ]
    assert pareto_front(points, cfg) == [True, True, False, True]
