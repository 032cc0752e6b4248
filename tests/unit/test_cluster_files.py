"""Every file under clusters/ is checked by the tool that will read it: cluster-launcher files by
Ray's own config preparation and schema, KubeRay manifests by the CRD schemas of the KubeRay
release they target (vendored), serveConfigV2 by Serve's schema. Beyond schemas, the commands
they run must exist: `ray start` flags, raymlp subcommands and config overrides, files and
versions they name."""

from __future__ import annotations

import copy
import functools
import gzip
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from raymlp.cli import _parser
from raymlp.config import load_config

from conftest import REPO

CLUSTERS = REPO / "clusters"
LAUNCHER_FILES = sorted(CLUSTERS.glob("*.yaml"))
KUBERAY_FILES = sorted((CLUSTERS / "kuberay").glob("ray*.yaml"))
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
WHEEL = f"raymlp-{VERSION}-py3-none-any.whl"
IMAGE_DIR = "/home/ray/"  # where clusters/Dockerfile puts the repo's examples/


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- cluster launcher (`ray up`) ------------------------------------------------------------


def prepared(config: dict) -> dict:
    """What `ray up` validates: the file merged with the provider's defaults."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(config))


def test_there_is_a_launcher_file_per_cloud():
    assert {load(p)["provider"]["type"] for p in LAUNCHER_FILES} == {"aws", "gcp"}


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_file_passes_rays_validation(path):
    from ray.autoscaler._private.util import validate_config

    validate_config(prepared(load(path)))


def test_rays_validation_would_catch_a_typo():
    from ray.autoscaler._private.util import validate_config

    config = load(LAUNCHER_FILES[0])
    config["available_node_types"]["cpu_worker"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepared(config))


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_file_has_head_cpu_and_gpu_workers_that_scale_to_zero(path):
    config = prepared(load(path))
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert all(types[t]["min_workers"] == 0 and types[t]["max_workers"] > 0 for t in ("cpu_worker", "gpu_worker"))
    assert 0 < config["idle_timeout_minutes"] <= 10
    spot = {"aws": lambda n: n.get("InstanceMarketOptions") == {"MarketType": "spot"},
            "gcp": lambda n: {"preemptible": True} in n.get("scheduling", [])}[config["provider"]["type"]]
    assert spot(types["cpu_worker"]["node_config"]) and spot(types["gpu_worker"]["node_config"])


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_file_runs_the_pinned_ray_with_token_auth_on_loopback(path):
    config = prepared(load(path))
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-cpu"
    assert config["available_node_types"]["gpu_worker"]["docker"]["worker_image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in (c for c in starts if "ray start" in c):
        assert command.startswith("export RAY_AUTH_MODE=token;"), command
    head = next(c for c in config["head_start_ray_commands"] if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def launcher_commands(config: dict) -> list[str]:
    lists = [config[k] for k in config if k.endswith("_commands")]
    lists += [t.get("worker_setup_commands", []) for t in config["available_node_types"].values()]
    return [simple for commands in lists for command in commands for simple in re.split(r"\s*(?:;|&&|\|\|)\s*", command)]


@functools.cache
def ray_start_options() -> set[str]:
    from ray.scripts.scripts import start

    return {opt.split("=")[0] for param in start.params for opt in param.opts}


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_every_command_a_launcher_file_runs_exists(path):
    config = prepared(load(path))
    mounted = {Path(remote).name: local for remote, local in config["file_mounts"].items()}
    for command in filter(None, launcher_commands(config)):
        argv = shlex.split(command)
        if argv[0] in ("export", "ulimit"):
            continue
        if argv[:2] == ["ray", "start"]:
            unknown = {a.split("=")[0] for a in argv[2:] if a.startswith("--")} - ray_start_options()
            assert not unknown, f"{command!r}: `ray start` has no {unknown}"
        elif argv[:2] == ["ray", "stop"]:
            continue
        elif argv[:2] == ["pip", "install"]:
            for requirement in (a for a in argv[2:] if not a.startswith("-") and not a.startswith("http")):
                if "raymlp" in requirement:
                    # The wheel `pip wheel --no-deps -w dist .` builds for this version, mounted from dist/.
                    assert requirement == f"~/{WHEEL}", command
                    assert mounted[WHEEL] == f"dist/{WHEEL}"
        else:
            pytest.fail(f"{path.name}: unexpected command {command!r}")


# --- KubeRay ---------------------------------------------------------------------------------


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """The openAPIV3Schema of KubeRay's CRD for `kind`, made strict the way `kubectl apply
    --validate=strict` is: an unknown field is an error, where a plain schema would prune it."""
    crd = yaml.load(gzip.open(CLUSTERS / "kuberay" / "crds" / f"ray.io_{kind.lower()}s.yaml.gz"), Loader=yaml.CSafeLoader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def strict(schema):
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_errors(manifest: dict) -> list[str]:
    errors = crd_validator(manifest["kind"]).iter_errors(manifest)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def cluster_spec(manifest: dict) -> dict:
    return {"RayCluster": lambda s: s, "RayJob": lambda s: s["rayClusterSpec"],
            "RayService": lambda s: s["rayClusterConfig"]}[manifest["kind"]](manifest["spec"])


def test_there_is_a_raycluster_a_rayjob_and_a_rayservice():
    assert sorted(load(p)["kind"] for p in KUBERAY_FILES) == ["RayCluster", "RayJob", "RayService"]


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_manifest_passes_the_kuberay_crd_schema(path):
    manifest = load(path)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert crd_errors(manifest) == []


def test_crd_validation_would_catch_a_typo_and_a_wrong_type():
    manifest = load(CLUSTERS / "kuberay" / "raycluster.yaml")
    manifest["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    manifest["spec"]["workerGroupSpecs"][1]["minReplicas"] = "zero"
    manifest["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 1
    errors = "\n".join(crd_errors(manifest))
    assert "'maxReplica' was unexpected" in errors
    assert "minReplicas: 'zero' is not of type 'integer'" in errors
    assert "imagePullPolicy: 1 is not of type 'string'" in errors


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_manifest_cluster_autoscales_from_zero_with_token_auth_and_the_pinned_images(path):
    spec = cluster_spec(load(path))
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"} and all(g["minReplicas"] == 0 for g in groups.values())
    containers = [spec["headGroupSpec"]["template"]["spec"]["containers"][0]]
    containers += [g["template"]["spec"]["containers"][0] for g in groups.values()]
    assert [c["image"].rsplit(":", 1)[1] for c in containers] == [VERSION, VERSION, f"{VERSION}-gpu"]
    assert groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_image_installs_this_version_on_the_pinned_ray():
    dockerfile = (CLUSTERS / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{ray.__version__}-py311-cpu" in dockerfile
    assert f"COPY dist/{WHEEL} " in dockerfile
    assert "COPY --chown=ray:users examples /home/ray/examples" in dockerfile


def in_repo(image_path: str) -> Path:
    assert image_path.startswith(IMAGE_DIR), image_path
    return REPO / image_path.removeprefix(IMAGE_DIR)


def test_rayjob_entrypoint_runs_real_commands_on_a_valid_config():
    entrypoint = load(CLUSTERS / "kuberay" / "rayjob.yaml")["spec"]["entrypoint"]
    bash, flag, script = shlex.split(entrypoint)
    assert (bash, flag) == ("bash", "-c")
    generate, run = (shlex.split(part) for part in script.split("&&"))
    assert generate[0] == "python" and in_repo(generate[1]).is_file()
    args = _parser().parse_args(run[1:])  # a misspelt flag or subcommand exits here
    assert run[0] == "raymlp" and args.command.__name__ == "cmd_run"
    cfg = load_config(in_repo(args.config), args.set)  # every --set names a real field
    assert cfg.data.path == generate[generate.index("--out") + 1]
    assert "serve" not in args.stages.split(",")  # the RayJob's cluster goes when the job ends


def test_rayservice_serve_config_passes_serves_schema_and_builds_from_a_valid_config():
    from ray.serve.schema import ServeDeploySchema

    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(load(CLUSTERS / "kuberay" / "rayservice.yaml")["spec"]["serveConfigV2"]))
    (app,) = serve_config.applications
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))
    assert app.import_path == "raymlp.serve.app:build_app"
    cfg = load_config(in_repo(app.args["config"]), app.args["set"].split())
    assert cfg.serve.model_version == "champion" and cfg.run_dir == "/mnt/raymlp/runs"
