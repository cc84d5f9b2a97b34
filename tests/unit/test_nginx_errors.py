"""config/nginx: what the nginx.conf front end refuses, where, and in which words; what
`--lenient` turns into warnings; and the warnings given either way."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest

from ferryman.config.load import load_config
from ferryman.config.nginx import load_nginx
from ferryman.config.schema import Config
from ferryman.errors import ConfigError

REFERENCE = Path(__file__).parents[1] / "golden" / "nginx" / "reference.conf"

# `{body}` goes inside a server block: line 1 of `body` is line 5 of the file.
SERVER = """\
events {{}}
http {{
    upstream app {{ server 127.0.0.1:9000; }}
    server {{
{body}
    }}
}}
"""
BODY_LINE = 5


def _write(tmp_path: Path, text: str, name: str = "nginx.conf") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _error(tmp_path: Path, text: str, *, lenient: bool = False) -> tuple[str, ConfigError]:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_nginx(str(path), lenient=lenient)
    return str(path), info.value


def _server_error(tmp_path: Path, body: str, *, lenient: bool = False) -> tuple[str, ConfigError]:
    return _error(tmp_path, SERVER.format(body=textwrap.indent(body, " " * 8)), lenient=lenient)


def _load(tmp_path: Path, text: str, *, lenient: bool = False) -> Config:
    return load_nginx(str(_write(tmp_path, text)), lenient=lenient)


# --- the directive table's checks, in nginx's words ------------------------------------


def test_unknown_directive(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, "listen 80;\nfoo bar;")
    assert error.where == f"{path}:{BODY_LINE + 1}"
    assert error.reason == 'unknown directive "foo"'


def test_unknown_directive_is_an_error_even_when_lenient(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, "proxy_passs http://app;", lenient=True)
    assert error.where == f"{path}:{BODY_LINE}"
    assert error.reason == 'unknown directive "proxy_passs"'


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ("proxy_pass http://app;", "proxy_pass"),
        ("worker_processes 2;", "worker_processes"),
        ("upstream x { server a:1; }", "upstream"),
        ("least_conn;", "least_conn"),
    ],
)
def test_directive_in_the_wrong_context(tmp_path: Path, body: str, name: str) -> None:
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE}"
    assert error.reason == f'"{name}" directive is not allowed here'


def test_unsupported_directive_in_the_wrong_context_says_so(tmp_path: Path) -> None:
    # nginx's own table (through crossplane) judges directives we do not support.
    path, error = _server_error(tmp_path, "listen 80;\nworker_rlimit_nofile 10;")
    assert error.where == f"{path}:{BODY_LINE + 1}"
    assert error.reason == '"worker_rlimit_nofile" directive is not allowed here'


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ("listen;", "listen"),
        ("listen 80;\nlocation { }", "location"),
        ("listen 80;\nproxy_http_version;", "proxy_http_version"),
        ("listen 80;\nproxy_set_header X;", "proxy_set_header"),
        ("listen 80;\nadd_header A b always extra;", "add_header"),
        ("listen 80;\nreturn;", "return"),
    ],
)
def test_wrong_number_of_arguments(tmp_path: Path, body: str, name: str) -> None:
    path, error = _server_error(tmp_path, body)
    line = BODY_LINE + body.count("\n")
    assert error.where == f"{path}:{line}"
    assert error.reason == f'invalid number of arguments in "{name}" directive'


def test_block_and_terminator_shape(tmp_path: Path) -> None:
    path, error = _error(tmp_path, "events;\nhttp {}\n")
    assert (error.where, error.reason) == (f"{path}:1", 'directive "events" has no opening "{"')
    path, error = _error(tmp_path, "events { worker_connections 10 { } }\n")
    assert error.where == f"{path}:1"
    assert error.reason == 'directive "worker_connections" is not terminated by ";"'


def test_duplicate_directive(tmp_path: Path) -> None:
    body = "listen 80;\nlocation / {\n    proxy_http_version 1.1;\n    proxy_http_version 1.0;\n}"
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE + 3}"
    assert error.reason == '"proxy_http_version" directive is duplicate'


# --- values and parameters ---------------------------------------------------------


@pytest.mark.parametrize("value", ["http2", "quic", "deferred"])
def test_unsupported_listen_parameter(tmp_path: Path, value: str) -> None:
    path, error = _server_error(tmp_path, f"listen 443 {value};")
    assert error.where == f"{path}:{BODY_LINE}"
    assert f'"{value}"' in error.reason
    assert '"listen"' in error.reason
    assert "not supported yet" in error.reason


def test_unsupported_parameter_stays_an_error_when_lenient(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, "listen 443 http2;", lenient=True)
    assert error.where == f"{path}:{BODY_LINE}"
    assert "http2" in error.reason


def test_invalid_listen_parameter(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, "listen 80 defualt_server;")
    assert error.where == f"{path}:{BODY_LINE}"
    assert error.reason == 'invalid parameter "defualt_server" in "listen" directive'


@pytest.mark.parametrize(
    ("main", "name"),
    [
        ("worker_processes 0;", "worker_processes"),
        ("worker_processes +4;", "worker_processes"),
        ("worker_processes 1_0;", "worker_processes"),
        ("worker_processes ４;", "worker_processes"),  # noqa: RUF001 (a full-width digit)
    ],
)
def test_bad_number(tmp_path: Path, main: str, name: str) -> None:
    text = f"{main}\nevents {{}}\nhttp {{ server {{ return 204; }} }}\n"
    path, error = _error(tmp_path, text)
    assert error.where == f"{path}:1"
    assert error.reason.startswith(f'invalid value "{main.split()[1][:-1]}" in "{name}" directive')


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("listen 80;\nlocation / { proxy_read_timeout 30x; }", '"proxy_read_timeout"'),
        ("listen 80;\nlocation / { proxy_connect_timeout 0; }", '"proxy_connect_timeout"'),
        ("listen 80;\nclient_max_body_size 1t;", '"client_max_body_size"'),
        ("listen 80;\nlocation / { proxy_buffering yes; }", 'it must be "on" or "off"'),
        ("listen 80;\nlocation / { proxy_http_version 2.0; }", '"proxy_http_version"'),
        ("listen 80;\nlocation / { proxy_next_upstream_tries -1; }", "proxy_next_upstream_tries"),
        ("listen 80000;", '"listen"'),
    ],
)
def test_bad_values(tmp_path: Path, body: str, fragment: str) -> None:
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE + body.count(chr(10))}"
    assert fragment in error.reason


def test_unknown_upstream_server_parameter(tmp_path: Path) -> None:
    text = "events {}\nhttp {\n    upstream app {\n        server a:1 wieght=2;\n    }\n}\n"
    path, error = _error(tmp_path, text)
    assert error.where == f"{path}:4"
    assert error.reason == 'invalid parameter "wieght=2" in "server" directive'


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("server a:1 drain;", '"drain"'),
        ("server a:1 drain;", '"drain"'),
        ("server a:1 weight=0;", '"weight=0"'),
        ("server a:1 weight=1001;", '"weight=1001"'),
        ("server unix:/tmp/a.sock;", "unix"),
        ("server a:99999;", "invalid port"),
        ("server a:1;\n        keepalive 0;", '"keepalive"'),
    ],
)
def test_bad_upstream_lines(tmp_path: Path, line: str, fragment: str) -> None:
    text = f"events {{}}\nhttp {{\n    upstream app {{\n        {line}\n    }}\n}}\n"
    path, error = _error(tmp_path, text)
    assert error.where == f"{path}:{4 + line.count(chr(10))}"
    assert fragment in error.reason


def test_balancing_methods_not_supported_yet(tmp_path: Path) -> None:
    upstream = "    upstream app {\n        sticky cookie x;\n        server a:1;\n    }\n"
    path, error = _error(tmp_path, f"events {{}}\nhttp {{\n{upstream}}}\n")
    assert error.where == f"{path}:4"
    assert error.reason.startswith('"sticky" directive is not supported yet')


def _upstream_error(tmp_path: Path, *lines: str) -> tuple[str, ConfigError]:
    """An error from an upstream block of `lines`; line 1 of them is line 4 of the file."""
    body = "".join(f"        {line}\n" for line in lines)
    return _error(tmp_path, f"events {{}}\nhttp {{\n    upstream app {{\n{body}    }}\n}}\n")


@pytest.mark.parametrize(
    "method",
    [
        "hash $request_uri",
        "hash $remote_addr consistent",
        "ip_hash",
        "random",
        "random two least_conn",
    ],
)
def test_backup_is_refused_with_keyed_and_random_methods(tmp_path: Path, method: str) -> None:
    path, error = _upstream_error(tmp_path, f"{method};", "server a:1;", "server b:1 backup;")
    assert error.where == f"{path}:6"
    assert (
        error.reason == 'balancing method does not support parameter "backup" in "server" directive'
    )


def test_backup_written_before_the_method_is_refused_too(tmp_path: Path) -> None:
    # nginx takes this order (it checks a server against the method set so far) and
    # then never uses the backup; the error points at the server.
    path, error = _upstream_error(tmp_path, "server a:1;", "server b:1 backup;", "ip_hash;")
    assert error.where == f"{path}:5"
    assert error.reason == (
        'balancing method does not support parameter "backup" in "server" directive'
        f' ("ip_hash" at {path}:6)'
    )


@pytest.mark.parametrize("method", ["least_conn", "least_time header"])
def test_backup_is_allowed_with_least_conn_and_least_time(tmp_path: Path, method: str) -> None:
    text = SERVER.format(body="        listen 80;\n        location / { proxy_pass http://app; }")
    text = text.replace("server 127.0.0.1:9000;", f"{method}; server a:1; server b:1 backup;")
    (upstream,) = _load(tmp_path, text).upstreams
    assert [p.backup for p in upstream.servers] == [False, True]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("least_conn", "hash $request_uri"),
        ("hash $request_uri", "hash $remote_addr"),
        ("ip_hash", "least_conn"),
        ("random two", "least_time header"),
        ("least_conn", "least_conn"),
    ],
)
def test_a_second_balancing_method_is_an_error(tmp_path: Path, first: str, second: str) -> None:
    path, error = _upstream_error(tmp_path, f"{first};", "server a:1;", f"{second};")
    assert error.where == f"{path}:6"
    first_name, second_name = first.split()[0], second.split()[0]
    assert error.reason == (
        f'load balancing method redefined: "{second_name}" after "{first_name}" at {path}:4'
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("least_time first_byte;", 'invalid parameter "first_byte" in "least_time" directive'),
        ("least_time header always;", 'invalid parameter "always" in "least_time" directive'),
        ("least_time;", 'invalid number of arguments in "least_time" directive'),
        ("hash $request_uri ketama;", 'invalid parameter "ketama" in "hash" directive'),
        ("hash;", 'invalid number of arguments in "hash" directive'),
        ("ip_hash on;", 'invalid number of arguments in "ip_hash" directive'),
        ("random three;", 'invalid parameter "three" in "random" directive'),
        ("random two least_time;", 'invalid parameter "least_time" in "random" directive'),
        (
            "random two least_time=first_byte;",
            'invalid parameter "least_time=first_byte" in "random" directive',
        ),
        (
            "random two least_conn=1;",
            'invalid parameter "least_conn=1" in "random" directive',
        ),
        ("random two least_conn x;", 'invalid number of arguments in "random" directive'),
    ],
)
def test_bad_balancing_method_arguments(tmp_path: Path, line: str, reason: str) -> None:
    path, error = _upstream_error(tmp_path, line, "server a:1;")
    assert error.where == f"{path}:4"
    assert error.reason == reason


@pytest.mark.parametrize(("key", "hint"), [('""', "empty key"), ('"$a\x01"', "control")])
def test_bad_hash_keys(tmp_path: Path, key: str, hint: str) -> None:
    path, error = _upstream_error(tmp_path, f"hash {key};", "server a:1;")
    assert error.where == f"{path}:4"
    assert error.reason.startswith('invalid value "')
    assert hint in error.reason


def test_balancing_methods_belong_in_upstream_blocks(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, "hash $request_uri;")
    assert error.where == f"{path}:{BODY_LINE}"
    assert error.reason == '"hash" directive is not allowed here'


def test_if_refuses_what_it_does_not_support_by_name(tmp_path: Path) -> None:
    body = "listen 80;\nlocation / {\n    if ($request_method = POST) { proxy_pass http://a; }\n}"
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE + 2}"
    assert error.reason.startswith('"proxy_pass" directive inside "if" is not supported')
    assert "--lenient" in error.reason


def test_if_refuses_conditions_it_does_not_know(tmp_path: Path) -> None:
    body = "listen 80;\nlocation / {\n    if ($a = b c) { return 403; }\n}"
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE + 2}"
    assert 'the condition "$a = b c" of "if" is not supported' in error.reason


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("location ~ \\.php$ { proxy_pass http://app/x/; }", "cannot have URI part"),
        ("location @x { proxy_pass http://app/; }", "cannot have URI part"),
        ("location / { proxy_pass https://$host; }", 'https:// in "proxy_pass" with variables'),
        ("location / { proxy_pass $scheme://$host; }", 'variables in the scheme of "proxy_pass"'),
        ("location / { proxy_pass $url; }", 'variables in the scheme of "proxy_pass"'),
        ("location / { proxy_pass ftp://$host; }", "invalid URL prefix"),
        ("location / { proxy_pass http:///$uri; }", "no host"),
        ('location / { proxy_pass "http://$host/a b"; }', 'invalid URL "http://$host/a b"'),
        ("location / { proxy_pass http://unix:/tmp/$s; }", "unix"),
        ("location / { proxy_pass http://app:80x/$uri; }", "invalid port"),
        ("location / { proxy_pass http://other/$uri; }", 'host "other" in "proxy_pass"'),
        ("location / { proxy_pass http://app:8080/$uri; }", 'host "app" in "proxy_pass"'),
        ("location / { proxy_pass ftp://app; }", "invalid URL prefix"),
        ("location / { proxy_pass http://app:8080; }", 'upstream "app" may not have port 8080'),
        ("location / { proxy_pass http://unix:/tmp/s.sock; }", "unix"),
    ],
)
def test_bad_proxy_pass(tmp_path: Path, body: str, fragment: str) -> None:
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE}"
    assert fragment in error.reason
    assert '"proxy_pass"' in error.reason


def test_proxy_pass_with_variables_is_a_template(tmp_path: Path) -> None:
    # Every default but the target is a static proxy_pass's.
    body = (
        "listen 80;\n"
        "location / { proxy_pass http://$host; }\n"
        "location /static/ { proxy_pass http://app; }"
    )
    config = _load(tmp_path, SERVER.format(body=body))
    dynamic, static = config.servers[0].routes
    assert (dynamic.upstream, dynamic.upstream_url, dynamic.upstream_uri) == (
        None,
        "http://$host",
        None,
    )
    assert dynamic == dataclasses.replace(
        static, path="/", upstream=None, upstream_url="http://$host"
    )
    assert dynamic.host_header == "$proxy_host"
    assert ("Connection", "close") in dynamic.set_headers
    assert dynamic.pass_upgrade is False


@pytest.mark.parametrize(
    "location",
    [
        "location ~ ^/re/(.*)$ { proxy_pass http://app/re/$1; }",
        "location @named { proxy_pass http://app/named$uri; }",
        "location / { proxy_pass http://127.0.0.1:9000/x$uri; }",
        "location / { proxy_pass http://[::1]/x$uri; }",
        "location / { proxy_pass http://$host:8080; }",
        # An implicit group another proxy_pass makes, matched by its $proxy_host.
        "location / { proxy_pass http://back.end:81$request_uri; }\n"
        "location /s/ { proxy_pass http://back.end:81; }",
    ],
)
def test_proxy_pass_with_variables_accepted(tmp_path: Path, location: str) -> None:
    config = _load(tmp_path, SERVER.format(body=f"listen 80;\n{location}"))
    route = config.servers[0].routes[0]
    assert route.upstream is None
    assert route.upstream_url == location.split("proxy_pass ")[1].split(";")[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("location /a { }\nlocation /a { }", 'duplicate location "/a" in "location" directive'),
        ("location /a { }\nlocation ^~ /a { }", 'duplicate location "/a" in "location" directive'),
        ("location /a { location /b { } }", 'location "/b" is outside location "/a"'),
        ("location = /a { location /a/b { } }", 'location "/a/b" cannot be inside the exact'),
        ("location /a { location @n { } }", 'named location "@n" can be on the server level only'),
        ("location ~~ /a { }", 'invalid location modifier "~~" in "location" directive'),
        ("location api { }", 'location "api" does not start with "/"'),
    ],
)
def test_bad_locations(tmp_path: Path, body: str, reason: str) -> None:
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE + body.count(chr(10))}"
    assert error.reason.startswith(reason)


def test_exact_and_prefix_location_may_share_a_path(tmp_path: Path) -> None:
    config = _load(tmp_path, SERVER.format(body="location = /a { }\nlocation /a { }"))
    assert [(r.match, r.path) for r in config.servers[0].routes] == [
        ("exact", "/a"),
        ("prefix", "/a"),
    ]


def test_regex_that_python_cannot_compile(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, 'location ~ "(unclosed" { return 204; }')
    assert error.where == f"{path}:{BODY_LINE}"
    assert 'cannot compile regex "(unclosed"' in error.reason


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("return 999;", 'invalid return code "999"'),
        ("return abc;", 'invalid return code "abc"'),
        ("return /relative;", 'invalid return code "/relative"'),
        ("rewrite ^/a /b forever;", 'invalid parameter "forever" in "rewrite" directive'),
        ('rewrite ^/a "";', 'empty replacement in "rewrite" directive'),
        ("set x 1;", 'invalid variable name "x" in "set" directive'),
        ("add_header X-A b sometimes;", 'invalid parameter "sometimes"'),
        ("add_header Bad:Name b;", 'invalid header name "Bad:Name"'),
        ('proxy_set_header Host "";', 'invalid "Host" value "" in "proxy_set_header"'),
        ('proxy_set_header Host "a b";', 'invalid "Host" value "a b" in "proxy_set_header"'),
        ("server_name bücher.example;", 'server name "bücher.example" is invalid'),
        ('location "@a b" { }', 'invalid named location "@a b"'),
        ('location "/a\\tb" { }', "control characters in location"),
        ("proxy_set_header X-A a;\nproxy_set_header x-a b;", 'sets "x-a" twice'),
        ("server_name *foo;", 'server name "*foo" is invalid'),
        ("server_name www.*.com;", 'server name "www.*.com" is invalid'),
        ("listen 80;\nlisten 0.0.0.0:80;", "a duplicate listen 0.0.0.0:80"),
        ("charset utf-8;", '"charset utf-8" is not supported yet'),
        ("location / { proxy_next_upstream denied; }", '"denied" in "proxy_next_upstream"'),
        ("location / { proxy_next_upstream sometimes; }", 'invalid value "sometimes"'),
    ],
)
def test_bad_server_level_statements(tmp_path: Path, body: str, fragment: str) -> None:
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE + body.count(chr(10))}"
    assert fragment in error.reason


def test_duplicate_default_server(tmp_path: Path) -> None:
    text = """\
        events {}
        http {
            server { listen 80 default_server; return 204; }
            server { listen 80 default_server; return 204; }
        }
        """
    path, error = _error(tmp_path, text)
    assert error.where == f"{path}:4"
    assert error.reason == 'a duplicate default server for 0.0.0.0:80 in "listen" directive'


@pytest.mark.parametrize(
    ("upstreams", "line", "reason"),
    [
        ("upstream a { server x:1; }\n    upstream A { server y:1; }", 4, 'duplicate upstream "A"'),
        ("upstream a { server x:1 backup; }", 3, 'no servers are inside upstream "a"'),
        ("upstream a { }", 3, 'no servers are inside upstream "a"'),
    ],
)
def test_bad_upstream_blocks(tmp_path: Path, upstreams: str, line: int, reason: str) -> None:
    text = f"events {{}}\nhttp {{\n    {upstreams}\n    server {{ return 204; }}\n}}\n"
    path, error = _error(tmp_path, text)
    assert error.where == f"{path}:{line}"
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    ("entries", "line", "fragment"),
    [
        ("default a;\n        default b;", 5, "duplicate default map parameter"),
        ("A 1;\n        a 2;", 5, 'conflicting parameter "a"'),
        ("hostnames;", 4, '"hostnames" in "map" is not supported yet'),
        ("volatile;", 4, '"volatile" in "map" is not supported yet'),
        ("include more.map;", 4, '"include" in "map" is not supported yet'),
        ("a 1 2;", 4, "invalid number of the map parameters"),
        ("~(bad 1;", 4, "cannot compile regex"),
    ],
)
def test_bad_maps(tmp_path: Path, entries: str, line: int, fragment: str) -> None:
    text = f"events {{}}\nhttp {{\n    map $uri $x {{\n        {entries}\n    }}\n}}\n"
    path, error = _error(tmp_path, text)
    assert error.where == f"{path}:{line}"
    assert fragment in error.reason


def test_map_variable_needs_a_dollar(tmp_path: Path) -> None:
    path, error = _error(tmp_path, "events {}\nhttp {\n    map $uri x { }\n}\n")
    assert error.where == f"{path}:3"
    assert error.reason == 'invalid variable name "x" in "map" directive'


@pytest.mark.parametrize(
    ("http", "fragment"),
    [
        ("log_format j escape=json '$uri';", '"escape=json" in "log_format"'),
        ("log_format combined '$uri';", 'duplicate "log_format" name "combined"'),
        ("log_format a/b '$uri';", 'invalid log format name "a/b"'),
        ("access_log /tmp/a.log nosuch;", 'unknown log format "nosuch"'),
        ("access_log /tmp/a.log combined gzip;", '"gzip" parameter of "access_log"'),
        ("access_log syslog:server=x;", '"syslog:" in "access_log"'),
        ("error_log /tmp/e.log loud;", 'invalid log level "loud"'),
        ("keepalive_timeout 65 2d;", 'invalid value "2d" in "keepalive_timeout"'),
        ("keepalive_timeout 65 x;", '"x"'),
        ("proxy_method $m;", 'variables in "proxy_method"'),
        ("proxy_method 'GE T';", 'invalid method "GE T"'),
        ("proxy_pass_request_body maybe;", 'it must be "on" or "off"'),
        ("proxy_ignore_headers Date;", 'invalid value "Date" in "proxy_ignore_headers"'),
        ("autoindex_format xml;", '"autoindex_format xml" is not supported yet'),
        ("autoindex_format yaml;", 'invalid value "yaml" in "autoindex_format"'),
        ("client_header_timeout 0;", '"client_header_timeout"'),
    ],
)
def test_bad_http_level_statements(tmp_path: Path, http: str, fragment: str) -> None:
    path, error = _error(tmp_path, f"events {{}}\nhttp {{\n    {http}\n}}\n")
    assert error.where == f"{path}:3"
    assert fragment in error.reason


def test_log_format_must_come_before_its_use(tmp_path: Path) -> None:
    text = "events {}\nhttp {\n    access_log /tmp/a.log main;\n    log_format main '$uri';\n}\n"
    path, error = _error(tmp_path, text)
    assert (error.where, error.reason) == (
        f"{path}:3",
        'unknown log format "main" in "access_log" directive',
    )


def test_http_only_directives_at_server_level(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, "listen 80;\nclient_body_timeout 5s;")
    assert error.where == f"{path}:{BODY_LINE + 1}"
    assert error.reason.startswith('"client_body_timeout" is only supported in the http context')
    path, error = _server_error(tmp_path, "listen 80;\naccess_log off;")
    assert error.reason.startswith('"access_log" is only supported in the http context')


def test_error_log_must_repeat_the_main_one(tmp_path: Path) -> None:
    text = """\
        error_log /tmp/main.log;
        events {}
        http {
            server {
                error_log /tmp/other.log;
                return 204;
            }
        }
        """
    path, error = _error(tmp_path, text)
    assert error.where == f"{path}:5"
    assert error.reason.startswith(f'"error_log" differs from the one at {path}:1')


def test_missing_events_section(tmp_path: Path) -> None:
    path, error = _error(tmp_path, "http { server { return 204; } }\n")
    assert (error.where, error.reason) == (path, 'no "events" section in configuration')


def test_nothing_to_serve(tmp_path: Path) -> None:
    path, error = _error(tmp_path, "events {}\nhttp { }\n")
    assert error.where == path
    assert '"server"' in error.reason


# --- syntax ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("events {}\nhttp {\n}\n}\n", 4, 'unexpected "}"'),
        ("events {}\nhttp {\n  server {\n", 3, 'unexpected end of file, expecting "}"'),
        ("events {}\nworker_processes 4", 2, 'unexpected end of file, expecting ";"'),
    ],
)
def test_syntax_errors(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path, error = _error(tmp_path, text)
    assert (error.where, error.reason) == (f"{path}:{line}", reason)


# --- include -----------------------------------------------------------------------


def test_include_glob_reports_the_included_files_line(tmp_path: Path) -> None:
    _write(tmp_path, "location /a { return 204; }\n", "sites/a.conf")
    _write(tmp_path, "location /b {\n    return 204;\n    bogus;\n}\n", "sites/b.conf")
    _write(tmp_path, "not included;\n", "sites/c.txt")
    path = _write(
        tmp_path, "events {}\nhttp {\n    server {\n        include sites/*.conf;\n    }\n}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_nginx(str(path))
    assert info.value.where == f"{tmp_path}/sites/b.conf:3"
    assert info.value.reason == 'unknown directive "bogus"'


def test_include_glob_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path, "location /b { return 204; }\n", "sites/20-b.conf")
    _write(tmp_path, "location /a { return 204; }\n", "sites/10-a.conf")
    path = _write(
        tmp_path, "events {}\nhttp {\n    server {\n        include sites/*.conf;\n    }\n}\n"
    )
    config = load_nginx(str(path))
    assert [r.path for r in config.servers[0].routes] == ["/a", "/b"]


def test_include_glob_matching_nothing_is_fine(tmp_path: Path) -> None:
    text = "events {}\nhttp {\n    include none/*.conf;\n    server { return 204; }\n}\n"
    assert len(_load(tmp_path, text).servers) == 1


def test_include_of_a_missing_file(tmp_path: Path) -> None:
    path, error = _error(tmp_path, "events {}\ninclude missing.conf;\n")
    assert error.where == f"{path}:2"
    assert error.reason.startswith(f'open() "{tmp_path}/missing.conf" failed')


def test_include_cycle(tmp_path: Path) -> None:
    _write(tmp_path, "include b.inc;\n", "a.inc")
    _write(tmp_path, "include a.inc;\n", "b.inc")
    _, error = _error(tmp_path, "events {}\ninclude a.inc;\n")
    assert error.where == f"{tmp_path}/b.inc:1"
    assert "cycle" in error.reason


def test_relative_paths_are_relative_to_the_config_directory(tmp_path: Path) -> None:
    text = """\
        pid run/nginx.pid;
        error_log logs/error.log;
        events {}
        http {
            access_log logs/access.log;
            server { return 204; }
        }
        """
    config = load_nginx(str(_write(tmp_path, text, "conf/nginx.conf")))
    assert config.pid_file == f"{tmp_path}/conf/run/nginx.pid"
    assert config.error_log == (f"{tmp_path}/conf/logs/error.log", "error")
    assert config.access_log.path == f"{tmp_path}/conf/logs/access.log"


def test_worker_processes_auto(tmp_path: Path) -> None:
    text = "worker_processes auto;\nevents {}\nhttp { server { return 204; } }\n"
    assert _load(tmp_path, text).workers == (os.cpu_count() or 1)


def test_escapes_as_nginx_reads_them(tmp_path: Path) -> None:
    body = r"""location / { return 200 "a\tb\n\"q\" \d"; }"""
    config = _load(tmp_path, SERVER.format(body=body))
    (step,) = config.servers[0].routes[0].script
    assert step.text == 'a\tb\n"q" \\d'  # type: ignore[union-attr]


# --- lenient mode and warnings -----------------------------------------------------


def test_lenient_turns_unsupported_directives_into_warnings(tmp_path: Path) -> None:
    body = "listen 80;\ngzip on;\nlocation / {\n    if ($x) { add_header X y; }\n    proxy_pass http://app;\n}"
    path, error = _server_error(tmp_path, body)
    assert error.where == f"{path}:{BODY_LINE + 1}"
    assert error.reason.startswith('"gzip" directive is not supported')
    config = _load(tmp_path, SERVER.format(body=textwrap.indent(body, "  ")), lenient=True)
    assert config.warnings == (
        f'{path}:{BODY_LINE + 1}: "gzip" directive is not supported; ignored (--lenient)',
        f'{path}:{BODY_LINE + 3}: "add_header" directive inside "if" is not supported;'
        " ignored (--lenient)",
    )
    assert config.servers[0].routes[0].upstream == "app"


def test_lenient_still_checks_nginx_validity_of_what_it_skips(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, "gzip on off;", lenient=True)
    assert error.where == f"{path}:{BODY_LINE}"
    assert error.reason == 'invalid number of arguments in "gzip" directive'


def test_load_config_passes_lenient_through(tmp_path: Path) -> None:
    path = _write(tmp_path, SERVER.format(body="gzip on;\nreturn 204;"))
    with pytest.raises(ConfigError):
        load_config(str(path))
    assert len(load_config(str(path), lenient=True).warnings) == 1


def test_the_reference_files_two_warnings() -> None:
    config = load_nginx(str(REFERENCE))
    assert config.warnings == (
        f'{REFERENCE}:23: proxy_set_header Connection "upgrade" sends Connection: upgrade on'
        " every request, which defeats upstream keep-alive; use map $http_upgrade"
        " $connection_upgrade { default upgrade; '' close; }",
        f'{REFERENCE}:25: "proxy_cache_bypass" has no effect without "proxy_cache"',
    )


def test_connection_upgrade_from_a_map_gives_no_warning(tmp_path: Path) -> None:
    body = "location / {\n    proxy_set_header Connection $connection_upgrade;\n    return 204;\n}"
    text = SERVER.format(body=body).replace(
        "http {", "http {\n    map $http_upgrade $connection_upgrade { default upgrade; '' close; }"
    )
    assert _load(tmp_path, text).warnings == ()


def test_the_reference_file_translates_as_nginx_runs_it() -> None:
    config = load_nginx(str(REFERENCE))
    assert config.workers == 4
    assert config.worker_connections == 1024
    (upstream,) = config.upstreams
    assert upstream.balance == "least_conn"
    assert len(upstream.servers) == 6
    assert {(p.weight, p.max_fails, p.fail_timeout) for p in upstream.servers} == {(10, 3, 30.0)}
    (route,) = config.servers[0].routes
    assert route.host_header == "$host"
    assert route.set_headers == (("Upgrade", "$http_upgrade"), ("Connection", "upgrade"))
    assert (route.http_version, route.forwarded_headers) == ("1.1", False)


def test_hiding_a_header_twice_hides_it_once(tmp_path: Path) -> None:
    body = (
        "location / {\n    proxy_hide_header X-A;\n    proxy_hide_header x-a;\n    return 204;\n}"
    )
    (route,) = _load(tmp_path, SERVER.format(body=body)).servers[0].routes
    assert route.hide_headers == ("x-a",)


def test_default_type_refuses_control_characters(tmp_path: Path) -> None:
    path, error = _server_error(tmp_path, 'listen 80;\ndefault_type "text/html\nX-A: 1";')
    assert error.where == f"{path}:{BODY_LINE + 1}"
    assert error.reason == 'invalid header value in "default_type" directive: control characters'


# --- nginx's proxy defaults, spelled out -----------------------------------------------

HIDDEN = (
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
)


def test_proxying_routes_hide_nginx_fields_and_close_the_connection(tmp_path: Path) -> None:
    body = "listen 80;\nlocation / { proxy_pass http://app; }\nlocation /r { return 204; }"
    proxied, local = _load(tmp_path, SERVER.format(body=body)).servers[0].routes
    assert proxied.hide_headers == HIDDEN
    assert proxied.set_headers == (("Connection", "close"),)
    # Nothing is proxied from a `return` route: no proxy defaults to spell out.
    assert (local.hide_headers, local.set_headers) == ((), ())
    assert (proxied.pass_upgrade, local.pass_upgrade) == (False, False)
    assert (proxied.default_type, local.default_type) == ("text/plain", "text/plain")


def test_pass_header_unhides_what_is_hidden_by_default_or_configured(tmp_path: Path) -> None:
    body = (
        "listen 80;\nproxy_hide_header X-A;\nproxy_pass_header Date;\nproxy_pass_header X-A;\n"
        "location / { proxy_pass http://app; }"
    )
    (route,) = _load(tmp_path, SERVER.format(body=body)).servers[0].routes
    assert route.hide_headers == tuple(name for name in HIDDEN if name != "date")
    assert route.pass_headers == ("date", "x-a")


def test_a_connection_header_of_its_own_replaces_close(tmp_path: Path) -> None:
    body = (
        'listen 80;\nproxy_set_header connection "";\nlocation / { proxy_pass http://app; }\n'
        "location /u/ { proxy_set_header Upgrade $http_upgrade; proxy_pass http://app; }"
    )
    inherited, own = _load(tmp_path, SERVER.format(body=body)).servers[0].routes
    assert inherited.set_headers == (("connection", ""),)
    assert own.set_headers == (("Upgrade", "$http_upgrade"), ("Connection", "close"))
