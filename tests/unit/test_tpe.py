"""TPESearch: TPE that counts a running trial at its latest epoch, driven as Tune drives it."""

import math

import pytest

from raymlp.config import parse_config
from raymlp.tune.space import build_param_space
from raymlp.tune.tpe import TPESearch

SPACE = parse_config(
    {
        "name": "t",
        "data": {"path": "d", "label": "y"},
        "tune": {
            "space": {
                "model.hidden_sizes": {"type": "choice", "values": [[8], [64, 64], [512, 512, 512]]},
                "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            }
        },
    }
).tune.space


def searcher(seed: int = 0, metrics: tuple[str, ...] = ("valid_accuracy",)) -> TPESearch:
    search = TPESearch(list(metrics), ["max"] + ["min"] * (len(metrics) - 1), seed=seed, startup_trials=2)
    assert search.set_search_properties(None, None, build_param_space(SPACE))
    return search


def draws_of_the_leaders_model(seed: int, leader_reports: bool) -> int:
    """Two random trials: `a` finishes poorly, `leader` runs on (and, if `leader_reports`, leads
    after its first epoch). Ten more trials follow, each reporting a middling first epoch."""
    search = searcher(seed)
    search.suggest("a")
    leader = search.suggest("leader")["model.hidden_sizes"]
    search.on_trial_complete("a", {"valid_accuracy": 0.1})
    if leader_reports:
        search.on_trial_result("leader", {"valid_accuracy": 0.9})
    draws = 0
    for i in range(10):
        draws += search.suggest(f"t{i}")["model.hidden_sizes"] == leader
        search.on_trial_result(f"t{i}", {"valid_accuracy": 0.5})
    return draws


def test_a_running_trial_that_leads_draws_the_next_trials_toward_it():
    # Ray's OptunaSearch would count the running leader among the worst until it finished.
    reported = sum(draws_of_the_leaders_model(seed, leader_reports=True) for seed in range(8))
    silent = sum(draws_of_the_leaders_model(seed, leader_reports=False) for seed in range(8))
    assert reported >= 40 > silent + 10, (reported, silent)  # of 80 draws; a third would be chance


def test_the_same_reports_give_the_same_trials():
    def run() -> list[dict]:
        search = searcher(seed=3)
        drawn = []
        for i in range(6):
            drawn.append(search.suggest(f"t{i}"))
            search.on_trial_result(f"t{i}", {"valid_accuracy": i / 10})
        return drawn

    assert run() == run()


def test_a_restored_search_goes_on_as_the_saved_one(tmp_path):
    search = searcher(seed=5)
    for i in range(4):
        search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", {"valid_accuracy": 0.2 * i})
    search.save(str(tmp_path / "state.pkl"))
    restored = TPESearch(["valid_accuracy"], ["max"], seed=0, startup_trials=10)
    restored.restore(str(tmp_path / "state.pkl"))
    assert [restored.suggest(f"r{i}") for i in range(3)] == [search.suggest(f"r{i}") for i in range(3)]


@pytest.mark.parametrize(
    "complete, kept",
    [
        ({"result": {"valid_accuracy": 0.7}}, [0.7]),
        ({"result": None}, [0.4]),  # ended without a final result: its last epoch stands
        ({"result": {"valid_accuracy": math.nan}}, [0.4]),
        ({"result": {"valid_accuracy": 0.7}, "error": True}, None),  # failed: forgotten, as Optuna does
    ],
)
def test_a_finished_trial_keeps_its_last_values_unless_it_failed(complete, kept):
    search = searcher()
    search.suggest("t")
    search.on_trial_result("t", {"valid_accuracy": 0.4})
    search.on_trial_complete("t", **complete)
    assert search._latest.get("t") == kept
    assert ("t" in search._params) == (kept is not None)


def test_a_trial_that_never_reported_is_forgotten_when_it_ends():
    search = searcher()
    search.suggest("t")
    search.on_trial_result("t", {"valid_accuracy": math.nan, "train_loss": 1.0})
    search.on_trial_complete("t", None)
    assert "t" not in search._params


def test_multi_objective_counts_a_trial_once_every_objective_is_reported():
    search = searcher(metrics=("valid_accuracy", "model_params"))
    search.suggest("t")
    search.on_trial_result("t", {"valid_accuracy": 0.4})
    assert "t" not in search._latest
    search.on_trial_result("t", {"valid_accuracy": 0.5, "model_params": 1000})
    assert search._latest["t"] == [0.5, 1000.0]
    assert search.suggest("u").keys() == SPACE.keys()
