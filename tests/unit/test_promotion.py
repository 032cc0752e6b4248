"""The promotion policy as a pure function: no Ray, no MLflow."""

import pytest

from raymlp.config.schema import RegistryConfig
from raymlp.lifecycle.promotion import decide


def test_the_first_version_is_champion():
    decision = decide(RegistryConfig(), "valid_accuracy", "max", 0.6, None, None)
    assert decision.promote and "no champion" in decision.reason


@pytest.mark.parametrize(
    "mode, challenger, champion, margin, promote",
    [
        ("max", 0.81, 0.80, 0.0, True),
        ("max", 0.80, 0.80, 0.0, False),  # a tie keeps the champion
        ("max", 0.81, 0.80, 0.02, False),  # better, but not by the margin
        ("max", 0.83, 0.80, 0.02, True),
        ("min", 0.30, 0.35, 0.0, True),  # loss: lower wins
        ("min", 0.36, 0.35, 0.0, False),
    ],
)
def test_if_better_needs_to_beat_the_champion_by_more_than_the_margin(mode, challenger, champion, margin, promote):
    cfg = RegistryConfig(promotion_margin=margin)
    decision = decide(cfg, "m", mode, challenger, "3", champion)
    assert decision.promote is promote
    assert "v3" in decision.reason and f"{challenger:.4f}" in decision.reason


def test_an_unscorable_champion_is_kept_and_the_reason_says_why():
    decision = decide(RegistryConfig(), "valid_auc", "max", 0.9, "2", None)
    assert not decision.promote and "cannot be scored" in decision.reason


@pytest.mark.parametrize("policy, promote", [("always", True), ("manual", False)])
def test_always_and_manual_ignore_the_scores(policy, promote):
    decision = decide(RegistryConfig(promotion=policy), "valid_auc", "max", 0.1, "2", 0.9)
    assert decision.promote is promote and policy in decision.reason
