"""`ferryman nginx`'s command line (nginx_cli.py): nginx's option syntax, its path rules,
and the configure arguments derived from the directive table."""

from __future__ import annotations

import pytest

from ferryman.config.nginx.directives import DIRECTIVES
from ferryman.nginx_cli import (
    DEFAULT_CONF,
    DEFAULT_PREFIX,
    NginxArgs,
    UsageError,
    configure_arguments,
    module_flags,
    parse_args,
    version_line,
)


def test_flags_group_and_values_follow_their_letter_or_the_next_argument() -> None:
    args = parse_args(["-tq", "-cmain.conf", "-p", "/srv/app", "-g", "daemon off;"])
    assert args == NginxArgs(
        test=True, quiet=True, conf="main.conf", prefix="/srv/app", directives="daemon off;"
    )


def test_a_value_letter_ends_its_group() -> None:
    # nginx: the rest of the argument is the value, even if it looks like flags.
    assert parse_args(["-c-t"]).conf == "-t"
    assert parse_args(["-tc", "x.conf"]) == NginxArgs(test=True, conf="x.conf")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-x"], 'invalid option: "x"'),
        (["-tx"], 'invalid option: "x"'),
        (["plain"], 'invalid option: "plain"'),
        (["-c"], 'option "-c" requires file name'),
        (["-p"], 'option "-p" requires directory name'),
        (["-e"], 'option "-e" requires file name'),
        (["-g"], 'option "-g" requires parameter'),
        (["-s"], 'option "-s" requires parameter'),
        (["-s", "restart"], 'invalid option: "-s restart"'),
    ],
)
def test_refusals_in_nginx_words(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args(argv)
    assert str(caught.value) == message


def test_capital_letters_imply_their_small_ones() -> None:
    assert parse_args(["-T"]) == NginxArgs(test=True, dump=True)
    assert parse_args(["-V"]) == NginxArgs(version=True, configure=True)
    assert parse_args(["-h"]) == NginxArgs(help=True, version=True)
    assert parse_args(["-?"]) == NginxArgs(help=True, version=True)


def test_paths_resolve_against_the_prefix() -> None:
    args = parse_args(["-p", "/srv/app", "-c", "conf/nginx.conf", "-e", "logs/error.log"])
    assert args.prefix_dir == "/srv/app/"
    assert args.conf_path == "/srv/app/conf/nginx.conf"
    assert args.error_log_target == "/srv/app/logs/error.log"
    absolute = parse_args(["-p", "/srv/app", "-c", "/etc/x.conf", "-e", "stderr"])
    assert absolute.conf_path == "/etc/x.conf"
    assert absolute.error_log_target == "stderr"


def test_defaults_are_the_compiled_in_paths() -> None:
    args = parse_args([])
    assert args.prefix_dir == DEFAULT_PREFIX
    assert args.conf_path == DEFAULT_CONF
    assert args.error_log_target == "stderr"


def test_version_line_reads_as_nginx_for_tools_that_parse_it() -> None:
    line = version_line()
    assert line.startswith("nginx version: nginx/")
    assert "ferryman" in line


def test_module_flags_follow_the_directive_table() -> None:
    table = list(DIRECTIVES)
    flags = module_flags(table)
    assert "--with-http_ssl_module" in flags
    assert "--without-http_proxy_module" not in flags
    assert "--without-http_gzip_module" in flags
    # A module whose directives leave the table turns into --without-.
    without_map = module_flags([name for name in table if name != "map"])
    assert "--without-http_map_module" in without_map
    assert "--without-http_map_module" not in flags
    # A default-off module appears when its directives arrive.
    assert "--with-http_stub_status_module" in module_flags([*table, "stub_status"])
    assert "--with-http_stub_status_module" not in flags


def test_configure_arguments_name_the_paths_and_the_modules() -> None:
    text = configure_arguments()
    assert text.startswith(f"--prefix={DEFAULT_PREFIX.rstrip('/')} --conf-path={DEFAULT_CONF}")
    assert all(part.startswith("--") for part in text.split(" "))
    assert set(module_flags(list(DIRECTIVES))) <= set(text.split(" "))
