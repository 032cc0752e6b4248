from ray import tune

from raymlp.config.schema import SearchDim
from raymlp.tune.space import build_param_space, decode_params

SPACE = {
    "train.lr": SearchDim(type="loguniform", low=1e-4, high=1e-2),
    "train.epochs": SearchDim(type="int", low=1, high=3),
    "model.dropout": SearchDim(type="uniform", low=0.0, high=0.5),
    "model.hidden_sizes": SearchDim(type="choice", values=[[32], [64, 64]]),
}


def test_space_maps_to_tune_domains():
    domains = build_param_space(SPACE)
    assert isinstance(domains["train.lr"], tune.search.sample.Float)
    assert domains["train.epochs"].lower == 1 and domains["train.epochs"].upper == 4  # int is inclusive
    assert domains["model.hidden_sizes"].categories == [0, 1]  # Optuna takes scalars only


def test_sampled_choice_indices_decode_to_values():
    sampled = {"train.lr": 0.001, "train.epochs": 2, "model.dropout": 0.1, "model.hidden_sizes": 1}
    assert decode_params(SPACE, sampled)["model.hidden_sizes"] == [64, 64]
    assert decode_params(SPACE, sampled)["train.lr"] == 0.001
