import pytest

from raymlp.pipeline import STAGES, check_stages


def test_all_stages_in_order():
    assert check_stages(list(reversed(STAGES))) == list(STAGES)


@pytest.mark.parametrize("stages", [["data"], ["data", "train"], ["data", "tune", "register"], ["serve"]])
def test_valid_subsets(stages):
    assert check_stages(stages) == stages


@pytest.mark.parametrize(
    "stages, message",
    [
        (["train"], "train needs data"),
        (["data", "register"], "register needs train or tune"),
        (["data", "train", "compress"], "compress needs register"),
        (["train", "tune", "register", "compress"], "needs data"),
        (["data", "deploy"], "unknown ['deploy']"),
    ],
)
def test_invalid_subsets_say_what_is_missing(stages, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_stages(stages)
