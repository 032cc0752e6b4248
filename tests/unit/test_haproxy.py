"""raymlp-haproxy: Serve's HAProxy config with request buffering, checked by the real HAProxy."""

from __future__ import annotations

import os
import subprocess

import pytest
from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

from raymlp.runtime import serve_ingress_env
from raymlp.serve.haproxy import BUFFERING, buffered, config_file

CONFIG = """global
    maxconn 64
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend http_frontend
    bind 127.0.0.1:8000
    default_backend replicas
backend replicas
    server replica 127.0.0.1:1
"""


def test_buffering_goes_into_the_defaults_section_once():
    once = buffered(CONFIG)
    assert once.index(BUFFERING) == once.index("defaults\n") + len("defaults\n")
    assert buffered(once) == once
    with pytest.raises(ValueError, match="defaults"):
        buffered("global\n    maxconn 64\n")


def test_serves_template_still_has_the_section_buffering_goes_in():
    assert "\ndefaults\n" in HAPROXY_CONFIG_TEMPLATE


def test_the_config_file_is_the_one_after_dash_f():
    assert config_file(["-db", "-f", "/x/haproxy.cfg", "-sf", "12"]) == "/x/haproxy.cfg"
    assert config_file(["-v"]) is None


def test_the_embedded_ray_runs_it_and_haproxy_accepts_the_config_it_writes(tmp_path):
    binary = serve_ingress_env("haproxy")["RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert os.path.basename(binary) == "raymlp-haproxy"
    path = tmp_path / "haproxy.cfg"
    path.write_text(CONFIG)
    checked = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert path.read_text() == buffered(CONFIG)
