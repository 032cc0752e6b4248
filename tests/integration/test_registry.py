"""Champion and challenger across pipeline runs that share one registry, rollback and promotion
by hand through the CLI, and a tampered registered artifact refused by name."""

from pathlib import Path

import mlflow
import pytest

from raymlp.artifacts import TamperedArtifactError, load_bundle
from raymlp.cli import main
from raymlp.config import config_digest
from raymlp.lifecycle.registry import CHALLENGER, CHAMPION, REPLACED_TAG, download_bundle, resolve_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runs(registry_runs):
    """Weak (first champion), strong (beats it), weak again (does not): see conftest."""
    return registry_runs


def aliases(result) -> dict[str, str]:
    client = mlflow.MlflowClient(result.tracking_uri)
    return {alias: str(v) for alias, v in client.get_registered_model(result.model_name).aliases.items()}


def test_a_better_run_is_promoted_and_a_worse_one_stays_challenger(runs):
    (_, first), (_, second), (_, third) = runs
    assert [r.model_version for r in (first, second, third)] == ["1", "2", "3"]
    assert first.promotion.promote and "no champion" in first.promotion.reason
    assert second.promotion.promote and second.promotion.champion_version == "1"
    assert second.promotion.challenger_metric > second.promotion.champion_metric
    assert not third.promotion.promote and "does not beat" in third.promotion.reason
    assert third.promotion.champion_version == "2"
    assert aliases(third) == {CHAMPION: "2", CHALLENGER: "3"}


def test_versions_carry_their_lineage(runs):
    cfg, second = runs[1]
    client = mlflow.MlflowClient(second.tracking_uri)
    tags = client.get_model_version(second.model_name, "2").tags
    assert tags["lineage.data_fingerprint"] == second.validation.fingerprint
    assert tags["lineage.config_sha256"] == config_digest(cfg) != config_digest(runs[0][0])
    assert tags["lineage.run_id"] == second.mlflow_run_id
    assert tags["lineage.challenges"] == "1" and tags[REPLACED_TAG] == "1"
    # The champion was re-scored on this run's validation rows: the same number it was registered with.
    champion_tags = client.get_model_version(second.model_name, "1").tags
    assert float(tags["promotion.champion_metric"]) == pytest.approx(float(champion_tags["valid_auc"]), abs=1e-4)


def test_cli_lists_rolls_back_and_promotes(runs, capsys):
    _, last = runs[2]
    config = str(last.run_dir / "config.yaml")  # the resolved config the run saved
    assert main(["models", "list", config]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["version", "aliases", "valid_auc"]
    assert [line.split()[:2] for line in listing[1:]] == [["3", "challenger"], ["2", "champion"], ["1", "-"]]

    assert main(["models", "rollback", config]) == 0
    assert aliases(last)[CHAMPION] == "1"
    assert main(["models", "rollback", config]) == 2  # version 1 was the first champion
    assert "first champion" in capsys.readouterr().err

    assert main(["models", "promote", config, "challenger"]) == 0
    assert aliases(last) == {CHAMPION: "3"}
    client = mlflow.MlflowClient(last.tracking_uri)
    assert client.get_model_version(last.model_name, "3").tags[REPLACED_TAG] == "1"


def test_a_registered_bundle_with_a_flipped_byte_is_refused_by_name(runs, tmp_path):
    _, first = runs[0]
    client = mlflow.MlflowClient(first.tracking_uri)
    version = resolve_version(client, first.model_name, "1")
    stored = Path(client.get_run(version.run_id).info.artifact_uri.removeprefix("file://")) / "model" / "weights.pt"
    original = stored.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    try:
        stored.write_bytes(flipped)
        bundle_dir, _ = download_bundle(version, quantized=False, dst=tmp_path)
        with pytest.raises(TamperedArtifactError, match=r"weights\.pt: SHA-256 does not match"):
            load_bundle(bundle_dir)
    finally:
        stored.write_bytes(original)
