"""`--publish [IP:]HOSTPORT:PORT`, Docker's port mapping, applied to a configuration: every
listener on PORT moves to IP:HOSTPORT. `ferryman demo` runs the reference nginx.conf
(`listen 80`) unmodified and publishes it on 127.0.0.1:8080, as `docker run -p` would.
Pure: configuration in, configuration out."""

from __future__ import annotations

import dataclasses
import re

from ferryman.config.schema import Config, ListenSpec
from ferryman.errors import ConfigError

__all__ = ["Publish", "apply_publish", "parse_publish"]

Publish = tuple[str, int, int]  # (host ip, host port, config port)
_FORM = re.compile(r"(?:(?P<ip>\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?(?P<hp>[0-9]{1,5}):(?P<cp>[0-9]{1,5})")


def parse_publish(text: str) -> Publish:
    m = _FORM.fullmatch(text)
    if m is None:
        raise ConfigError("--publish", f"want [IP:]HOSTPORT:PORT, not {text!r}")
    host_port, port = int(m["hp"]), int(m["cp"])
    if not (0 < host_port < 65536 and 0 < port < 65536):
        raise ConfigError("--publish", f"ports must be 1..65535 in {text!r}")
    return ((m["ip"] or "0.0.0.0").strip("[]"), host_port, port)


def apply_publish(config: Config, publish: list[Publish]) -> Config:
    if not publish:
        return config
    by_port = {port: (ip, hp) for ip, hp, port in publish}
    used = set()

    def move(listen: ListenSpec) -> ListenSpec:
        if listen.port not in by_port:
            return listen
        used.add(listen.port)
        ip, hp = by_port[listen.port]
        return dataclasses.replace(listen, host=ip, port=hp)

    servers = tuple(
        dataclasses.replace(s, listen=tuple(move(lst) for lst in s.listen)) for s in config.servers
    )
    unused = sorted(set(by_port) - used)
    if unused:
        raise ConfigError("--publish", f"no listener on port {unused[0]} to publish")
    return dataclasses.replace(config, servers=servers)
