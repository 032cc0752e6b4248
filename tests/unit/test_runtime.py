"""The environment an embedded Ray's Serve ingress is started with."""

from __future__ import annotations

from raymlp.runtime import SERVE_HAPROXY, serve_ingress_env

NODE_ID = "n" * 56
"""Ray puts HAProxy's sockets in a folder named after the node, a 56-character id."""


def test_each_embedded_ray_gets_its_own_haproxy_files_and_ports():
    a, b = serve_ingress_env("haproxy"), serve_ingress_env("haproxy")
    assert a[SERVE_HAPROXY] == b[SERVE_HAPROXY] == "1"
    assert a["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] != b["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]
    ports = [int(env[k]) for env in (a, b) for k in env if k.endswith("_PORT")]
    assert len(ports) == 8 and len(set(ports)) == 8
    for env in (a, b):
        for key in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
            base, name = env[key].rsplit("/", 1)
            assert len(f"{base}/{NODE_ID}/{name}") <= 97  # HAProxy refuses a longer socket path


def test_the_python_proxy_turns_haproxy_off_even_when_inherited():
    assert serve_ingress_env("proxy") == {SERVE_HAPROXY: "0"}
