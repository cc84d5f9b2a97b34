"""`ferryman nginx [flags]`: the nginx binary's command line, as a drop-in.

Owns nginx's option syntax (`ngx_get_options`: `-tq`, `-cFILE` or `-c FILE`, `-s
SIGNAL`, its error words and exit codes), the defaults nginx compiles in (prefix,
configuration file, pid file), nginx's path rules for `-p`/`-c`/`-e`, the test
(`-t`/`-T`) and version (`-v`/`-V`) output, and sending a signal to the running master
through its pid file (`-s`). Running is `workers.serve` with nginx's process rules
(`ProcessMode`). Messages go to standard error, as nginx's do; only `-T`'s dump goes to
standard output.

Knows nothing about what a directive means (config/nginx/), or how the master and
workers run (workers.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ferryman import __version__
from ferryman.config.schema import Config
from ferryman.errors import ConfigError
from ferryman.observability.error_log import LEVELS

__all__ = [
    "DEFAULT_CONF",
    "DEFAULT_PID",
    "DEFAULT_PREFIX",
    "NGINX_VERSION",
    "NginxArgs",
    "UsageError",
    "configure_arguments",
    "main",
    "parse_args",
    "version_line",
]

# The nginx release whose configuration language Ferryman follows (`http2 on` is
# 1.25.1's). `-v` says it first, so tools that parse `nginx/X.Y.Z` read it.
NGINX_VERSION = "1.25.1"
# nginx's compiled-in paths, as the Debian package builds them, so that a drop-in finds
# the files the nginx it replaces would.
DEFAULT_PREFIX = "/usr/share/nginx/"
DEFAULT_CONF = "/etc/nginx/nginx.conf"
DEFAULT_PID = "/run/nginx.pid"
DEFAULT_ERROR_LOG = "stderr"
DEFAULT_ACCESS_LOG = "/var/log/nginx/access.log"

# `-s NAME` -> the signal nginx sends (ngx_signal_process).
SIGNALS = {
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen": signal.SIGUSR1,
    "reload": signal.SIGHUP,
}

# Options that take a value, and nginx's word for it when it is missing.
_VALUE_OPTIONS = {
    "p": "directory name",
    "e": "file name",
    "c": "file name",
    "g": "parameter",
    "s": "parameter",
}
_FLAGS = frozenset("?hvVtTq")


class UsageError(Exception):
    """A command line nginx would refuse; the message is nginx's, without `nginx: `."""


@dataclass(frozen=True, slots=True)
class NginxArgs:
    help: bool = False
    version: bool = False
    configure: bool = False
    test: bool = False
    dump: bool = False
    quiet: bool = False
    signal: str | None = None
    prefix: str | None = None
    conf: str | None = None
    error_log: str | None = None
    directives: str = ""

    @property
    def prefix_dir(self) -> str:
        """The prefix, always ending in `/` (nginx appends one)."""
        prefix = self.prefix if self.prefix is not None else DEFAULT_PREFIX
        return os.path.join(os.path.abspath(prefix), "")

    @property
    def conf_path(self) -> str:
        """`-c`, relative to the prefix (nginx's ngx_conf_full_name), or the default."""
        return os.path.normpath(os.path.join(self.prefix_dir, self.conf or DEFAULT_CONF))

    @property
    def error_log_target(self) -> str:
        """`-e`: "stderr" or a path relative to the prefix."""
        target = self.error_log if self.error_log is not None else DEFAULT_ERROR_LOG
        if target == "stderr":
            return target
        return os.path.normpath(os.path.join(self.prefix_dir, target))


def parse_args(argv: Sequence[str]) -> NginxArgs:
    """nginx's ngx_get_options: every argument starts with `-`; flags may be grouped
    (`-tq`); a value follows its letter (`-cFILE`) or is the next argument."""
    found: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            raise UsageError(f'invalid option: "{arg}"')
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            pos += 1
            if letter in _FLAGS:
                _set_flag(found, letter)
                continue
            if letter not in _VALUE_OPTIONS:
                raise UsageError(f'invalid option: "{letter}"')
            if pos < len(arg):
                value = arg[pos:]
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise UsageError(f'option "-{letter}" requires {_VALUE_OPTIONS[letter]}')
            _set_value(found, letter, value)
            break
        i += 1
    return NginxArgs(**found)  # type: ignore[arg-type]


_FLAG_FIELDS = {
    "?": ("help", "version"),
    "h": ("help", "version"),
    "v": ("version",),
    "V": ("version", "configure"),
    "t": ("test",),
    "T": ("test", "dump"),
    "q": ("quiet",),
}
_VALUE_FIELDS = {"p": "prefix", "e": "error_log", "c": "conf", "g": "directives", "s": "signal"}


def _set_flag(found: dict[str, object], letter: str) -> None:
    for name in _FLAG_FIELDS[letter]:
        found[name] = True


def _set_value(found: dict[str, object], letter: str, value: str) -> None:
    if letter == "s" and value not in SIGNALS:
        raise UsageError(f'invalid option: "-s {value}"')
    found[_VALUE_FIELDS[letter]] = value


# ---- -v / -V / -h ------------------------------------------------------------------


def version_line() -> str:
    return f"nginx version: nginx/{NGINX_VERSION} (ferryman {__version__})"


# nginx modules, by configure flag: (on by default?, directives that make the module).
# A module counts as built in when the directive table has every one of its
# directives, so `-V` follows the table (config/nginx/directives.py) by itself.
_MODULES: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    # on by default: `--without-X` when Ferryman lacks it
    ("http_charset_module", True, ("charset", "source_charset", "charset_map")),
    ("http_gzip_module", True, ("gzip",)),
    ("http_ssi_module", True, ("ssi",)),
    ("http_userid_module", True, ("userid",)),
    ("http_access_module", True, ("allow", "deny")),
    ("http_auth_basic_module", True, ("auth_basic", "auth_basic_user_file")),
    ("http_mirror_module", True, ("mirror",)),
    ("http_autoindex_module", True, ("autoindex",)),
    ("http_geo_module", True, ("geo",)),
    ("http_map_module", True, ("map",)),
    ("http_split_clients_module", True, ("split_clients",)),
    ("http_referer_module", True, ("valid_referers",)),
    ("http_rewrite_module", True, ("rewrite", "return", "set")),
    ("http_proxy_module", True, ("proxy_pass",)),
    ("http_fastcgi_module", True, ("fastcgi_pass",)),
    ("http_uwsgi_module", True, ("uwsgi_pass",)),
    ("http_scgi_module", True, ("scgi_pass",)),
    ("http_grpc_module", True, ("grpc_pass",)),
    ("http_memcached_module", True, ("memcached_pass",)),
    ("http_limit_conn_module", True, ("limit_conn_zone", "limit_conn")),
    ("http_limit_req_module", True, ("limit_req_zone", "limit_req")),
    ("http_empty_gif_module", True, ("empty_gif",)),
    ("http_browser_module", True, ("modern_browser", "ancient_browser")),
    ("http_upstream_hash_module", True, ("hash",)),
    ("http_upstream_ip_hash_module", True, ("ip_hash",)),
    ("http_upstream_least_conn_module", True, ("least_conn",)),
    ("http_upstream_random_module", True, ("random",)),
    ("http_upstream_keepalive_module", True, ("keepalive",)),
    ("http_upstream_zone_module", True, ("zone",)),
    ("http-cache", True, ("proxy_cache_path", "proxy_cache")),
    # off by default: `--with-X` when Ferryman has it
    ("http_ssl_module", False, ("ssl_certificate", "ssl_certificate_key")),
    ("http_v2_module", False, ("http2",)),
    ("http_realip_module", False, ("set_real_ip_from", "real_ip_header")),
    ("http_addition_module", False, ("add_before_body", "add_after_body")),
    ("http_sub_module", False, ("sub_filter",)),
    ("http_dav_module", False, ("dav_methods",)),
    ("http_flv_module", False, ("flv",)),
    ("http_mp4_module", False, ("mp4",)),
    ("http_gunzip_module", False, ("gunzip",)),
    ("http_gzip_static_module", False, ("gzip_static",)),
    ("http_auth_request_module", False, ("auth_request",)),
    ("http_random_index_module", False, ("random_index",)),
    ("http_secure_link_module", False, ("secure_link",)),
    ("http_degradation_module", False, ("degradation",)),
    ("http_slice_module", False, ("slice",)),
    ("http_stub_status_module", False, ("stub_status",)),
    ("stream", False, ("stream",)),
    ("mail", False, ("mail",)),
)


def module_flags(table: Sequence[str]) -> list[str]:
    """`--with-X` for each off-by-default module whose directives are all in `table`,
    `--without-X` for each on-by-default module whose directives are not."""
    names = set(table)
    flags = []
    for module, default_on, directives in _MODULES:
        built = all(name in names for name in directives)
        if built and not default_on:
            flags.append(f"--with-{module}")
        elif default_on and not built:
            flags.append(f"--without-{module}")
    return flags


def configure_arguments() -> str:
    from ferryman.config.nginx.directives import DIRECTIVES

    paths = [
        f"--prefix={DEFAULT_PREFIX.rstrip('/')}",
        f"--conf-path={DEFAULT_CONF}",
        f"--http-log-path={DEFAULT_ACCESS_LOG}",
        f"--error-log-path={DEFAULT_ERROR_LOG}",
        f"--pid-path={DEFAULT_PID}",
    ]
    return " ".join(paths + module_flags(list(DIRECTIVES)))


def _usage() -> str:
    return (
        "Usage: nginx [-?hvVtTq] [-s signal] [-p prefix]\n"
        "             [-e filename] [-c filename] [-g directives]\n"
        "\n"
        "Options:\n"
        "  -?,-h         : this help\n"
        "  -v            : show version and exit\n"
        "  -V            : show version and configure options then exit\n"
        "  -t            : test configuration and exit\n"
        "  -T            : test configuration, dump it and exit\n"
        "  -q            : suppress non-error messages during configuration testing\n"
        "  -s signal     : send signal to a master process: stop, quit, reopen, reload\n"
        f"  -p prefix     : set prefix path (default: {DEFAULT_PREFIX})\n"
        f"  -e filename   : set error log file (default: {DEFAULT_ERROR_LOG})\n"
        f"  -c filename   : set configuration file (default: {DEFAULT_CONF})\n"
        "  -g directives : set global directives out of configuration file\n"
    )


def _show_version(args: NginxArgs) -> None:
    lines = [version_line()]
    if args.help:
        lines.append(_usage())
    if args.configure:
        lines.append(f"built with {ssl.OPENSSL_VERSION}")
        if ssl.HAS_SNI:
            lines.append("TLS SNI support enabled")
        lines.append(f"configure arguments: {configure_arguments()}")
    _say("\n".join(lines))


# ---- loading, with nginx's defaults ------------------------------------------------


class _Emerg(Exception):
    """A start-up failure, in nginx's words (without the location prefix)."""


def load(args: NginxArgs, files: list[str] | None = None) -> Config:
    """The configuration as `nginx` would read it: `-p`, `-c`, `-g`, and nginx's
    defaults for what the file leaves out (pid file, error log, daemon on)."""
    from ferryman.config.nginx import load_nginx

    path = args.conf_path
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _Emerg(f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from None
    try:
        config = load_nginx(path, prefix=args.prefix_dir, directives=args.directives, files=files)
    except ConfigError as exc:
        raise _Emerg(_in_nginx_words(exc)) from None
    return dataclasses.replace(
        config,
        pid_file=config.pid_file or DEFAULT_PID,
        error_log=config.error_log or (args.error_log_target, "error"),
        daemon=True if config.daemon is None else config.daemon,
    )


_LOCATED = re.compile(r"(?s)(.*?:\d+|command line): (.*)")


def _in_nginx_words(exc: ConfigError) -> str:
    """`reason in FILE:LINE` (nginx's order) for a located error; `where: reason` else."""
    # The nginx front end names the directive where nginx does not; nginx_reason is
    # nginx's own wording (config/nginx/translate.py).
    reason = getattr(exc, "nginx_reason", exc.reason)
    if exc.where == "command line" or re.fullmatch(r".*:\d+", exc.where):
        return f"{reason} in {exc.where}"
    return f"{exc.where}: {exc.reason}"


def _warning_words(warning: str) -> str:
    match = _LOCATED.fullmatch(warning)
    return f"{match.group(2)} in {match.group(1)}" if match else warning


# ---- output ------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _log_line(level: str, message: str) -> str:
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    pid = os.getpid()
    return f"{stamp} [{level}] {pid}#{pid}: {message}"


def _report(args: NginxArgs, level: str, message: str) -> None:
    """A start-up message as nginx gives it: a log line when the error log is standard
    error; otherwise `nginx: [level] message` on standard error and the log line in
    the file."""
    target = args.error_log_target
    if target == "stderr":
        _say(_log_line(level, message))
        return
    _say(f"nginx: [{level}] {message}")
    try:
        with open(target, "a", encoding="utf-8") as file:
            file.write(_log_line(level, message) + "\n")
    except OSError as exc:
        _say(
            f'nginx: [alert] could not open error log file: open() "{target}" failed '
            f"({exc.errno}: {exc.strerror})"
        )


# ---- the commands ------------------------------------------------------------------


def _test(args: NginxArgs) -> int:
    from ferryman.app import check_config

    files: list[str] = []
    path = args.conf_path
    try:
        config = load(args, files)
        _warn(args, config)
        check_config(config)
    except _Emerg as exc:
        _report(args, "emerg", str(exc))
        _say(f"nginx: configuration file {path} test failed")
        return 1
    except ConfigError as exc:
        _report(args, "emerg", _in_nginx_words(exc))
        _say(f"nginx: configuration file {path} test failed")
        return 1
    if not args.quiet:
        _say(f"nginx: the configuration file {path} syntax is ok")
        _say(f"nginx: configuration file {path} test is successful")
    if args.dump:
        _dump(files)
    return 0


def _dump(files: Sequence[str]) -> None:
    out = sys.stdout
    for file in files:
        out.write(f"# configuration file {file}:\n")
        with open(file, encoding="utf-8", errors="replace") as f:
            text = f.read()
        out.write(text if text.endswith("\n") or not text else text + "\n")
        out.write("\n")
    out.flush()


def _warn(args: NginxArgs, config: Config) -> None:
    for warning in config.warnings:
        _report(args, "warn", _warning_words(warning))


def _signal(args: NginxArgs) -> int:
    """nginx's ngx_signal_process: the configuration names the pid file."""
    try:
        config = load(args)
    except _Emerg as exc:
        _report(args, "emerg", str(exc))
        return 1
    pid_file = config.pid_file or DEFAULT_PID
    try:
        with open(pid_file, encoding="ascii", errors="replace") as file:
            text = file.read()
    except OSError as exc:
        _report(args, "error", f'open() "{pid_file}" failed ({exc.errno}: {exc.strerror})')
        return 1
    number = text.rstrip("\r\n")  # nginx trims the line end only
    if not (number.isascii() and number.isdigit()) or int(number) < 1:
        _report(args, "error", f'invalid PID number "{number}" in "{pid_file}"')
        return 1
    signo = SIGNALS[args.signal or ""]
    try:
        os.kill(int(number), signo)
    except OSError as exc:
        _report(args, "alert", f"kill({number}, {int(signo)}) failed ({exc.errno}: {exc.strerror})")
        return 1
    return 0


def _run(args: NginxArgs) -> int:
    from ferryman.workers import ProcessMode, serve

    try:
        config = load(args)
    except _Emerg as exc:
        _report(args, "emerg", str(exc))
        return 1
    _warn(args, config)

    def reload() -> Config:
        try:
            return load(args)
        except _Emerg as exc:
            # nginx logs the error as it is ([emerg], file:line); workers.py then logs
            # the refusal and keeps the running configuration.
            logging.getLogger(__name__).log(LEVELS["emerg"], "%s", exc)
            raise ConfigError("reload", str(exc)) from None

    mode = ProcessMode(nginx_log_format=True, fast_term=True)
    try:
        return serve(config, reload=reload, mode=mode)
    except ConfigError as exc:
        _report(args, "emerg", _in_nginx_words(exc))
        return 1


def main(argv: Sequence[str]) -> int:
    """`ferryman nginx ARGS...`; the exit status, as nginx's."""
    try:
        args = parse_args(argv)
    except UsageError as exc:
        _say(f"nginx: {exc}")
        return 1
    if args.version:
        _show_version(args)
        if not args.test:
            return 0
    if args.signal is not None:
        return _signal(args)
    if args.test:
        return _test(args)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 0
