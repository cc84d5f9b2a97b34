"""Loading a configuration file: read it, pick the front end by content, and merge host
overrides from the command line.

Owns the file read and the format decision only; each front end (native YAML,
nginx.conf) owns its own syntax and validation. Knows nothing about the runtime.
"""

from __future__ import annotations

import dataclasses
import re

from ferryman.config.native import load_native
from ferryman.config.schema import Config
from ferryman.config.units import parse_host_name, parse_ip
from ferryman.errors import ConfigError

__all__ = ["apply_hosts", "load_config", "looks_like_nginx"]

# Comments are `#` to end of line in both syntaxes.
_COMMENT = re.compile(r"#[^\n]*")
# An nginx statement opens with a bare directive name followed by whitespace, `;` or
# `{` (`worker_processes 4;`, `events {`, `http{`), and its first argument (if any) does
# not start with `:`. YAML's `key: value` puts a colon right after the name instead, and
# `---`, `- item`, `{...}` and `%YAML` do not start with a name at all.
_NGINX_STATEMENT = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*(?:\s+[^\s:;{][^;{]*)?\s*[;{]")


def load_config(path: str, *, lenient: bool = False) -> Config:
    """Read `path` and build its `Config`; every failure is a ConfigError naming `path`
    (and the line, for nginx.conf). `lenient` turns nginx directives Ferryman does not
    support into warnings (`Config.warnings`) instead of errors; YAML ignores it."""
    text = _read(path)
    if looks_like_nginx(text):
        # Imported for nginx.conf only: the front end (and crossplane) is a few hundred
        # KiB that every worker forked from a YAML-configured master would carry.
        from ferryman.config.nginx import load_nginx

        return load_nginx(path, lenient=lenient)
    return load_native(text, path)


def looks_like_nginx(text: str) -> bool:
    """True if the first statement reads as an nginx directive rather than YAML."""
    significant = _COMMENT.sub("", text.removeprefix("\ufeff"))
    return _NGINX_STATEMENT.match(significant) is not None


def apply_hosts(config: Config, extra: dict[str, str]) -> Config:
    """A copy of `config` whose `hosts` also maps `extra` (name -> IP); `extra` wins over
    the file, as a command-line flag should. The order of the file's entries is kept."""
    overrides = {_host_name(name): _ip(name, address) for name, address in extra.items()}
    merged = [(name, overrides.pop(name, address)) for name, address in config.hosts]
    merged.extend(overrides.items())
    return dataclasses.replace(config, hosts=tuple(merged))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"cannot read: not UTF-8 text (byte {exc.start})") from None


def _host_name(name: str) -> str:
    try:
        return parse_host_name(name)
    except ValueError as exc:
        raise ConfigError(f"--add-host {name}", str(exc)) from None


def _ip(name: str, address: str) -> str:
    try:
        return parse_ip(address)
    except ValueError as exc:
        raise ConfigError(f"--add-host {name}", str(exc)) from None
