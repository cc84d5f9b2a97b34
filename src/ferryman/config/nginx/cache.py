"""Translate functions for nginx's proxy cache directives: `proxy_cache_path` (http
level: a cache zone) and the location-level `proxy_cache*` / `proxy_no_cache`
directives, and the freeze step that turns a level's effective settings into a
`CacheSpec`.

Inheritance follows ngx_http_proxy_merge_loc_conf: each single-valued directive is
inherited unless the level sets its own; `proxy_cache_valid`, `proxy_cache_bypass`
and `proxy_no_cache` are lists an inner level inherits whole only when it has none of
its own. Knows nothing about how the runtime caches.
"""

from __future__ import annotations

import re

from ferryman.config.nginx import values
from ferryman.config.nginx.draft import ConfigDraft, Level, Scope
from ferryman.config.nginx.syntax import Stmt
from ferryman.config.schema import CACHE_USE_STALE, CacheSpec, CacheZoneSpec

__all__ = [
    "cache_spec",
    "check_cache_conditions",
    "proxy_cache",
    "proxy_cache_flag",
    "proxy_cache_key",
    "proxy_cache_lock_timeout",
    "proxy_cache_methods",
    "proxy_cache_min_uses",
    "proxy_cache_path",
    "proxy_cache_templates",
    "proxy_cache_use_stale",
    "proxy_cache_valid",
]

_ZONE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_LEVELS = re.compile(r"[12](?::[12]){0,2}")
_STATUS = re.compile(r"[0-9]{3}")
# proxy_cache_path parameters accepted and ignored: the directory layout (levels) and
# where temporary files go (use_temp_path) are the store's business; Ferryman writes
# temporary files next to their entries and renames them, as `use_temp_path=off`.
_IGNORED = ("levels", "use_temp_path")
# nginx: a proxy_cache_valid with a time only means these statuses.
_VALID_DEFAULT_STATUSES = (200, 301, 302)
_DEFAULT = CacheSpec(zone="")
_DEFAULT_ZONE = CacheZoneSpec(name="")


def proxy_cache_path(scope: Scope, stmt: Stmt) -> None:
    """`proxy_cache_path PATH keys_zone=NAME:SIZE [levels=] [inactive=] [max_size=]
    [use_temp_path=]`. nginx's keys_zone SIZE sizes its shared key index; Ferryman's
    index is the directory itself, so it is checked and not used."""
    directory = values.path(stmt, scope.config.runtime_dir, stmt.args[0])
    name = None
    inactive, max_size = _DEFAULT_ZONE.inactive, _DEFAULT_ZONE.max_size
    for arg in stmt.args[1:]:
        key, eq, value = arg.partition("=")
        if not eq:
            raise stmt.error(f'invalid parameter "{arg}"')
        if key == "keys_zone":
            zone, colon, size = value.partition(":")
            if not colon or not _ZONE_NAME.fullmatch(zone):
                raise stmt.error(f'invalid keys zone size "{arg}"')
            values.size(stmt, size)
            name = zone
        elif key == "inactive":
            inactive = values.time(stmt, value, positive=True)
        elif key == "max_size":
            max_size = values.size(stmt, value)
        elif key == "levels":
            if not _LEVELS.fullmatch(value):
                raise stmt.error(f'invalid "levels" "{value}"')
        elif key == "use_temp_path":
            values.flag(stmt, value)
        else:
            raise values.unsupported(
                stmt, f'"{key}" parameter of "proxy_cache_path" is not supported'
            )
    if name is None:
        raise stmt.error('"proxy_cache_path" must have "keys_zone" parameter')
    draft = scope.config
    for other, other_stmt in draft.cache_zones:
        if other.name == name:
            raise stmt.error(f'duplicate zone "{name}" (first defined at {other_stmt.where})')
        if other.path == directory:
            raise stmt.error(f'duplicate "proxy_cache_path" "{directory}"')
    spec = CacheZoneSpec(name=name, path=directory, max_size=max_size, inactive=inactive)
    draft.cache_zones.append((spec, stmt))


def proxy_cache(scope: Scope, stmt: Stmt) -> None:
    """`proxy_cache ZONE | off`; the zone is looked up once the whole file is read
    (proxy_cache_path may come later in http, as in nginx)."""
    value = stmt.args[0]
    if value != "off" and not _ZONE_NAME.fullmatch(value):
        raise values.unsupported(stmt, '"proxy_cache" with variables is not supported')
    scope.the_level().values[stmt.name] = (value, stmt)


def proxy_cache_key(scope: Scope, stmt: Stmt) -> None:
    key = stmt.args[0]
    if not key or any(ord(ch) < 0x20 or ch == "\x7f" for ch in key):
        raise values.invalid(stmt, key)
    scope.the_level().values[stmt.name] = key


def proxy_cache_valid(scope: Scope, stmt: Stmt) -> None:
    """`proxy_cache_valid [CODE ...] TIME`; `any` for every status."""
    *codes, last = stmt.args
    seconds = values.time(stmt, last)
    statuses: tuple[int, ...]
    if not codes:
        statuses = _VALID_DEFAULT_STATUSES
    elif codes == ["any"]:
        statuses = ()
    else:
        for code in codes:
            if not _STATUS.fullmatch(code) or not 100 <= int(code) <= 599:
                raise stmt.error(f'invalid status "{code}"')
        statuses = tuple(int(code) for code in codes)
    scope.the_level().append(stmt.name, (statuses, seconds))


def proxy_cache_templates(scope: Scope, stmt: Stmt) -> None:
    """proxy_cache_bypass / proxy_no_cache: each argument a template; any of them
    non-empty and not "0" holds. Repeated directives add to the list."""
    level = scope.the_level()
    for arg in stmt.args:
        level.append(stmt.name, (arg, stmt))


def proxy_cache_use_stale(scope: Scope, stmt: Stmt) -> None:
    if stmt.args == ("off",):
        scope.the_level().values[stmt.name] = ()
        return
    for condition in stmt.args:
        if condition not in CACHE_USE_STALE:
            raise values.invalid(stmt, condition)
    scope.the_level().values[stmt.name] = tuple(dict.fromkeys(stmt.args))


def proxy_cache_flag(scope: Scope, stmt: Stmt) -> None:
    """proxy_cache_lock, proxy_cache_background_update: on | off."""
    scope.the_level().values[stmt.name] = values.flag(stmt, stmt.args[0])


def proxy_cache_lock_timeout(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values[stmt.name] = values.time(stmt, stmt.args[0], positive=True)


def proxy_cache_methods(scope: Scope, stmt: Stmt) -> None:
    """nginx: GET and HEAD are always cached; POST may be added."""
    for method in stmt.args:
        if method not in ("GET", "HEAD", "POST"):
            raise values.invalid(stmt, method)
    extra = ("POST",) if "POST" in stmt.args else ()
    scope.the_level().values[stmt.name] = ("GET", "HEAD", *extra)


def proxy_cache_min_uses(scope: Scope, stmt: Stmt) -> None:
    scope.the_level().values[stmt.name] = values.number(stmt, stmt.args[0], 1, 1_000_000)


def cache_spec(level: Level, draft: ConfigDraft) -> CacheSpec | None:
    """The effective cache settings of a location, or None without `proxy_cache`."""
    found = level.value("proxy_cache", None)
    if found is None or found[0] == "off":
        return None
    zone, stmt = found
    if zone not in {z.name for z, _ in draft.cache_zones}:
        raise stmt.error(f'"proxy_cache" zone "{zone}" is unknown')
    return CacheSpec(
        zone=zone,
        key=level.value("proxy_cache_key", _DEFAULT.key),
        valid=tuple(level.array("proxy_cache_valid")),
        bypass=tuple(text for text, _ in level.array("proxy_cache_bypass")),
        no_cache=tuple(text for text, _ in level.array("proxy_no_cache")),
        use_stale=level.value("proxy_cache_use_stale", _DEFAULT.use_stale),
        lock=level.value("proxy_cache_lock", _DEFAULT.lock),
        lock_timeout=level.value("proxy_cache_lock_timeout", _DEFAULT.lock_timeout),
        background_update=level.value("proxy_cache_background_update", _DEFAULT.background_update),
        methods=level.value("proxy_cache_methods", _DEFAULT.methods),
        min_uses=level.value("proxy_cache_min_uses", _DEFAULT.min_uses),
        # nginx adds no Cache-Status field (users add $upstream_cache_status themselves).
        status_header=False,
    )


def check_cache_conditions(level: Level, draft: ConfigDraft) -> None:
    """proxy_cache_bypass / proxy_no_cache where no proxy_cache is said at all: nginx
    accepts them silently, but they can have no effect, which is worth a warning.
    (Under `proxy_cache off` the user has said so; no warning.)"""
    if level.value("proxy_cache", None) is not None:
        return
    first = [
        level.array(name)[0][1]
        for name in ("proxy_cache_bypass", "proxy_no_cache")
        if level.array(name)
    ]
    for stmt in sorted(first, key=lambda s: (s.file, s.line)):
        message = f'"{stmt.name}" has no effect without "proxy_cache"'
        if f"{stmt.where}: {message}" not in draft.warnings:
            draft.warn(stmt, message)
