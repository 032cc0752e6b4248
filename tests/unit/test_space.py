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


def test_quantized_ranges_round_to_their_step():
    space = {
        "train.batch_size": SearchDim(type="int", low=64, high=512, q=64),
        "model.dropout": SearchDim(type="uniform", low=0.0, high=0.5, q=0.1),
        "train.lr": SearchDim(type="loguniform", low=1e-4, high=1e-1, q=1e-4),
    }
    domains = build_param_space(space)
    for _ in range(50):
        assert domains["train.batch_size"].sample() % 64 == 0
        assert round(domains["model.dropout"].sample() * 10, 6) % 1 == 0
    assert isinstance(domains["train.lr"].get_sampler(), tune.search.sample.Quantized)


def test_grid_enumerates_choices_and_int_ranges():
    space = {
        "train.epochs": SearchDim(type="int", low=1, high=5, q=2),
        "model.hidden_sizes": SearchDim(type="choice", values=[[32], [64, 64]]),
    }
    grid = build_param_space(space, grid=True)
    assert grid["train.epochs"] == {"grid_search": [1, 3, 5]}
    assert grid["model.hidden_sizes"] == {"grid_search": [0, 1]}
