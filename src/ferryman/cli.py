"""The command line: run | check | convert | proxy | forward | demo | echo | cert. The
only place that exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ferryman import __version__
from ferryman.config.load import apply_hosts, load_config
from ferryman.config.quick import forward_config, quick_config
from ferryman.config.schema import Config
from ferryman.errors import ConfigError

__all__ = ["main"]


def _add_host(text: str) -> tuple[str, str]:
    name, sep, addr = text.partition(":")
    if not sep or not name or not addr:
        raise argparse.ArgumentTypeError(f"want NAME:IP, got {text!r}")
    return name, addr


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferryman", description="Reverse proxy and load balancer.")
    p.add_argument("--version", action="version", version=f"ferryman {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c", "--config", required=True, help="configuration file (native YAML or nginx.conf)"
        )
        with_loading(sp)

    def with_loading(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--lenient",
            action="store_true",
            help="nginx.conf: ignore directives Ferryman does not support, with a warning",
        )
        sp.add_argument(
            "--add-host",
            action="append",
            type=_add_host,
            default=[],
            metavar="NAME:IP",
            help="resolve NAME to IP, before the system resolver (repeatable)",
        )

    run = sub.add_parser("run", help="run the proxy from a configuration file")
    with_config(run)
    run.add_argument(
        "--publish",
        "-p",
        action="append",
        default=[],
        metavar="[IP:]HOSTPORT:PORT",
        help="listen on IP:HOSTPORT where the configuration says PORT (docker run -p)",
    )
    run.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")

    check = sub.add_parser("check", help="validate a configuration file and exit (like nginx -t)")
    # Parsed by nginx_cli.py (main() hands it over before argparse); listed for --help.
    sub.add_parser(
        "nginx", help="nginx's own command line (-t, -T, -s reload, -p, -c, -g ...): a drop-in"
    )
    with_config(check)

    for name, what in (
        ("reload", "tell the running master to reload its configuration (SIGHUP)"),
        ("stop", "tell the running master to finish in-flight requests and exit (SIGQUIT)"),
    ):
        signal_cmd = sub.add_parser(name, help=what)
        where = signal_cmd.add_mutually_exclusive_group(required=True)
        where.add_argument("-c", "--config", help="the configuration naming the pid file")
        where.add_argument("--pid-file", metavar="FILE", help="the master's pid file")
        with_loading(signal_cmd)

    convert = sub.add_parser(
        "convert", help="print the native YAML equivalent of a configuration (e.g. nginx.conf)"
    )
    convert.add_argument("config", metavar="FILE", help="nginx.conf or native YAML")
    with_loading(convert)

    quick = sub.add_parser("proxy", help="quick reverse proxy from flags, no file")
    quick.add_argument("--listen", required=True, metavar="HOST:PORT")
    quick.add_argument("--backends", required=True, metavar="HOST:PORT,...")
    quick.add_argument("--balance", default="round_robin")
    quick.add_argument("--workers", type=int, default=1)
    quick.add_argument("--access-log", default="-", help="'-' (stdout), a path, or 'off'")
    quick.add_argument("--log-format", default="combined", choices=["combined", "json"])
    quick.add_argument(
        "--no-forwarded-headers",
        action="store_true",
        help="do not add X-Forwarded-For/-Proto/-Host (nginx adds none unless configured)",
    )
    quick.add_argument(
        "--keepalive-requests",
        type=int,
        default=1000,
        metavar="N",
        help="requests per upstream connection before it is closed (nginx default 1000)",
    )
    quick.add_argument(
        "--worker-connections",
        type=int,
        default=1024,
        metavar="N",
        help="client connections per worker; more are closed at once (nginx worker_connections)",
    )
    quick.add_argument("--no-uvloop", action="store_true")

    _forward_parser(sub)

    demo = sub.add_parser("demo", help="six echo backends behind the proxy on 127.0.0.1:8080")
    demo.add_argument("--no-uvloop", action="store_true")
    demo.add_argument(
        "--tls",
        action="store_true",
        help="also serve https://localhost:8443 with a development certificate (cert dev)",
    )
    demo.add_argument("--cert-dir", metavar="DIR", help="development CA directory (cert dev)")
    demo.add_argument(
        "--admin",
        metavar="HOST:PORT|off",
        default="127.0.0.1:9901",
        help="where the dashboard and admin API listen (default 127.0.0.1:9901)",
    )
    demo.add_argument(
        "--quiet",
        action="store_true",
        help="no live progress line (requests/s and what each backend served)",
    )

    cert = sub.add_parser("cert", help="certificates: `cert dev NAME...` for development")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True)
    dev = cert_sub.add_parser(
        "dev", help="make (or reuse) a local CA and issue a certificate for NAME... with it"
    )
    dev.add_argument("names", nargs="+", metavar="NAME", help="host, *.wildcard, IP or e-mail")
    dev.add_argument(
        "--dir",
        metavar="DIR",
        help="where the CA and certificates go (default ~/.local/share/ferryman/dev-ca)",
    )

    echo = sub.add_parser("echo", help="one echo backend (answers GET / with its UUID)")
    echo.add_argument("--listen", required=True, metavar="HOST:PORT")
    echo.add_argument("--uuid")
    return p


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config, lenient=args.lenient)
    if args.add_host:
        config = apply_hosts(config, dict(args.add_host))
    # Like nginx's "[warn]" lines: a configuration that works, but not as one may think.
    for warning in config.warnings:
        print(f"ferryman: [warn] {warning}", file=sys.stderr)
    return config


def _cmd_check(args: argparse.Namespace) -> int:
    from ferryman.app import check_config

    config = _load(args)
    check_config(config)
    print(f"ferryman: configuration file {args.config} syntax is ok")
    print(f"ferryman: configuration file {args.config} test is successful")
    return 0


def _cmd_signal(args: argparse.Namespace) -> int:
    """`reload` / `stop`: signal the master named by the pid file (nginx -s reload|quit).
    The master validates a reloaded configuration itself and keeps the running one when
    it is invalid (its log says why); `ferryman check` tells beforehand."""
    import signal

    pid_file = args.pid_file
    if pid_file is None:
        pid_file = _load(args).pid_file
        if pid_file is None:
            raise ConfigError(args.config, "no pid_file: the running master cannot be found")
    try:
        with open(pid_file) as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"pid file {pid_file}", f"cannot read: {exc.strerror}") from None
    digits = text.rstrip("\n")
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
        raise ConfigError(f"pid file {pid_file}", f"not a process id: {text[:20]!r}")
    signo = signal.SIGHUP if args.command == "reload" else signal.SIGQUIT
    try:
        os.kill(int(digits), signo)
    except OSError as exc:
        raise ConfigError(f"pid file {pid_file}", f"kill {digits}: {exc.strerror}") from None
    print(f"ferryman: sent {signo.name} to the master ({digits})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ferryman.config.publish import apply_publish, parse_publish
    from ferryman.workers import ProcessMode, serve

    publish = [parse_publish(p) for p in args.publish]

    def load() -> Config:
        return apply_publish(_load(args), publish)

    # An nginx.conf gets nginx's error-log lines (observability/error_log.py).
    mode = ProcessMode(nginx_log_format=_is_nginx_file(args.config))
    return serve(load(), reload=load, use_uvloop=not args.no_uvloop, mode=mode)


def _is_nginx_file(path: str) -> bool:
    from ferryman.config.load import looks_like_nginx

    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return looks_like_nginx(file.read())
    except OSError:
        return False


def _cmd_convert(args: argparse.Namespace) -> int:
    from ferryman.config.dump import dump_native

    sys.stdout.write(dump_native(_load(args)))
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    from ferryman.workers import serve

    log = None if args.access_log == "off" else args.access_log
    config = quick_config(
        args.listen,
        [b for b in args.backends.split(",") if b],
        balance=args.balance,
        workers=args.workers,
        access_log=log,
        log_format=args.log_format,
        forwarded_headers=not args.no_forwarded_headers,
        keepalive_requests=args.keepalive_requests,
        worker_connections=args.worker_connections,
    )
    return serve(config, use_uvloop=not args.no_uvloop)


def _forward_parser(sub: Any) -> None:
    fwd = sub.add_parser("forward", help="quick forward proxy (HTTP and CONNECT) from flags")
    fwd.add_argument("--listen", required=True, metavar="HOST:PORT")
    fwd.add_argument("--connect-ports", default="443", metavar="PORT,...")
    fwd.add_argument(
        "--anonymity",
        default="transparent",
        metavar="LEVEL",
        help="transparent (Via, X-Forwarded-For) | anonymous (Via) | elite",
    )
    fwd.add_argument(
        "--allow-private",
        action="store_true",
        help="let clients reach loopback, private and metadata addresses",
    )
    fwd.add_argument("--auth-file", metavar="FILE", help="htpasswd file: proxy users (407)")
    fwd.add_argument("--realm", default="proxy")
    fwd.add_argument("--user-agent", default="", metavar="UA", help="replace User-Agent")
    for action in ("allow", "deny"):
        fwd.add_argument(
            f"--{action}-dest",
            dest="destinations",
            action="append",
            type=lambda v, a=action: (a, v),
            default=[],
            metavar="PATTERN",
            help=f"{action} a destination: domain, *.domain, CIDR, port:N, all (in order)",
        )
    fwd.add_argument(
        "--add-host",
        action="append",
        type=_add_host,
        default=[],
        metavar="NAME:IP",
        help="resolve NAME to IP first (repeatable)",
    )
    fwd.add_argument("--workers", type=int, default=1)
    fwd.add_argument("--access-log", default="-", help="'-' (stdout), a path, or 'off'")
    fwd.add_argument("--log-format", default="combined", choices=["combined", "json"])
    fwd.add_argument("--no-uvloop", action="store_true")


def _cmd_forward(args: argparse.Namespace) -> int:
    import dataclasses

    from ferryman.workers import serve

    config = forward_config(
        args.listen,
        connect_ports=args.connect_ports,
        anonymity=args.anonymity,
        allow_private=args.allow_private,
        auth_file=args.auth_file,
        realm=args.realm,
        user_agent=args.user_agent,
        destinations=tuple(args.destinations),
        workers=args.workers,
        access_log=None if args.access_log == "off" else args.access_log,
        log_format=args.log_format,
    )
    if args.add_host:
        config = dataclasses.replace(config, hosts=tuple(args.add_host))
    return serve(config, use_uvloop=not args.no_uvloop)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ferryman.demo import run_demo
    from ferryman.tls.devcert import DEFAULT_DIR

    cert_dir = Path(args.cert_dir) if args.cert_dir else DEFAULT_DIR
    admin = None
    if args.admin != "off":
        host, _, port = args.admin.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            print(f"ferryman: [emerg] --admin: expected HOST:PORT or off, not {args.admin!r}")
            return 1
        admin = (host.strip("[]") or "127.0.0.1", int(port))
    return run_demo(
        use_uvloop=not args.no_uvloop,
        tls_dir=cert_dir if args.tls else None,
        admin=admin,
        quiet=args.quiet,
    )


def _cmd_cert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ferryman.tls.devcert import DEFAULT_DIR, issue

    directory = Path(args.dir) if args.dir else DEFAULT_DIR
    try:
        made = issue(directory, tuple(args.names))
    except (ValueError, OSError) as exc:
        raise ConfigError("cert dev", str(exc)) from None
    print(f"ferryman: CA          {directory / 'ca.pem'}  (trust this one, for development only)")
    print(f"ferryman: certificate {made.cert}")
    print(f"ferryman: key         {made.key}")
    print(f"ferryman: try: curl --cacert {directory / 'ca.pem'} https://{made.names[0]}:PORT/")
    return 0


def _cmd_echo(args: argparse.Namespace) -> int:
    from ferryman import echo

    argv = ["--listen", args.listen] + (["--uuid", args.uuid] if args.uuid else [])
    return echo.main(argv)


_COMMANDS = {
    "run": _cmd_run,
    "check": _cmd_check,
    "reload": _cmd_signal,
    "stop": _cmd_signal,
    "convert": _cmd_convert,
    "proxy": _cmd_proxy,
    "forward": _cmd_forward,
    "demo": _cmd_demo,
    "cert": _cmd_cert,
    "echo": _cmd_echo,
}


def main(argv: Sequence[str] | None = None) -> int:
    # `ferryman nginx ...` takes nginx's own command line (nginx_cli.py), which argparse
    # cannot parse (`-tq`, `-cFILE`); so does this program installed under the name nginx.
    if argv is None:
        argv = sys.argv[1:]
        if os.path.basename(sys.argv[0]) == "nginx":
            argv = ["nginx", *argv]
    if argv and argv[0] == "nginx":
        from ferryman import nginx_cli

        return nginx_cli.main(argv[1:])
    args = _parser().parse_args(argv)
    from ferryman.observability.error_log import NativeFormatter, name_levels

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(NativeFormatter())  # the request context, when there is one
    name_levels()
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"ferryman: [emerg] {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
