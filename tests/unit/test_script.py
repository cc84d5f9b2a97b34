"""The rewrite-module interpreter: set, rewrite (flags, args, redirects), return."""

from __future__ import annotations

import re

import pytest

from ferryman.config.schema import ReturnSpec, RewriteSpec, ScriptStep, SetSpec
from ferryman.proxy.script import (
    MAX_REWRITE_CYCLES,
    ScriptOutcome,
    compile_script,
    run_script,
    unescape_redirect,
)

_TOKEN = re.compile(r"\$(\d|\{\w+\}|\w+)")


class Vars:
    """A fake of the lead's renderer: `$1`..`$9` from the captures, other names from a
    dict that `set_var` writes to."""

    def __init__(self, **values: str) -> None:
        self.values = dict(values)

    def render(self, template: str, captures: tuple[str, ...]) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1).strip("{}")
            if name.isdigit():
                n = int(name)
                return captures[n - 1] if n <= len(captures) else ""
            return self.values.get(name, "")

        return _TOKEN.sub(one, template)

    def set_var(self, name: str, value: str) -> None:
        self.values[name] = value


def run(
    steps: list[ScriptStep],
    uri: str = "/",
    v: Vars | None = None,
    args: str = "",
    captures: tuple[str, ...] = (),
    escape: bool = False,
) -> ScriptOutcome:
    v = v or Vars()
    return run_script(
        compile_script(steps),
        uri,
        v.render,
        v.set_var,
        args=args,
        captures=captures,
        escape_captures=escape,
    )


def test_constant() -> None:
    assert MAX_REWRITE_CYCLES == 10


def test_empty_script_changes_nothing() -> None:
    out = run([], "/a", args="x=1")
    assert out == ScriptOutcome(uri="/a")
    assert not out.answered and not out.needs_location_search


# ---- set ----


def test_set_renders_and_assigns_in_order() -> None:
    v = Vars(host="example.com")
    run([SetSpec("a", "x-$host"), SetSpec("b", "$a!")], v=v)
    assert v.values["a"] == "x-example.com"
    assert v.values["b"] == "x-example.com!"


def test_set_sees_the_location_captures() -> None:
    v = Vars()
    run([SetSpec("id", "user-$1")], v=v, captures=("42",))
    assert v.values["id"] == "user-42"


# ---- rewrite ----


def test_rewrite_without_flag_continues_and_asks_for_a_new_search() -> None:
    v = Vars()
    out = run([RewriteSpec("^/old/(.*)$", "/new/$1"), SetSpec("after", "$1")], "/old/x", v)
    assert out.uri == "/new/x" and out.uri_changed and out.flag is None
    assert out.needs_location_search
    assert v.values["after"] == "x"


def test_rewrites_chain_on_the_current_uri() -> None:
    out = run([RewriteSpec("^/a$", "/b"), RewriteSpec("^/b$", "/c")], "/a")
    assert out.uri == "/c"


def test_rewrite_last_stops_the_script() -> None:
    v = Vars()
    out = run([RewriteSpec("^/a$", "/b", "last"), SetSpec("x", "ran")], "/a", v)
    assert (out.uri, out.flag, out.needs_location_search) == ("/b", "last", True)
    assert "x" not in v.values


def test_rewrite_break_stops_and_keeps_the_location() -> None:
    v = Vars()
    out = run([RewriteSpec("^/a$", "/b", "break"), SetSpec("x", "ran")], "/a", v)
    assert (out.uri, out.flag, out.uri_changed) == ("/b", "break", True)
    assert not out.needs_location_search
    assert "x" not in v.values


def test_break_after_a_flagless_rewrite_still_keeps_the_location() -> None:
    out = run([RewriteSpec("^/a$", "/b"), RewriteSpec("^/b$", "/c", "break")], "/a")
    assert out.uri == "/c" and not out.needs_location_search


def test_non_matching_rewrite_does_nothing_but_clear_captures() -> None:
    v = Vars()
    steps: list[ScriptStep] = [RewriteSpec("^/nomatch$", "/x", "last"), SetSpec("c", "[$1]")]
    out = run(steps, "/a", v, captures=("from-location",))
    assert out.uri == "/a" and not out.uri_changed and out.flag is None
    # nginx resets r->ncaptures when a rewrite regex does not match.
    assert v.values["c"] == "[]" and out.captures == ()


def test_rewrite_captures_replace_the_location_captures() -> None:
    out = run([RewriteSpec("^/(\\w+)/(\\w+)$", "/$2/$1")], "/a/b", captures=("loc",))
    assert out.uri == "/b/a" and out.captures == ("a", "b")


def test_rewrite_named_captures_become_variables() -> None:
    v = Vars()
    out = run([RewriteSpec("^/(?<section>\\w+)/", "/s/$section")], "/docs/x", v)
    assert v.values["section"] == "docs"
    assert out.uri == "/s/docs"


def test_empty_rewritten_uri_is_500() -> None:
    out = run([RewriteSpec("^/(.*)$", "$1")], "/")
    assert out.status == 500 and out.answered


def test_rewrite_regex_is_case_sensitive_and_searches() -> None:
    assert run([RewriteSpec("ABC", "/hit")], "/x/abc/y").uri == "/x/abc/y"
    assert run([RewriteSpec("abc", "/hit")], "/x/abc/y").uri == "/hit"


# ---- rewrite and arguments ----


def test_replacement_without_question_mark_keeps_args() -> None:
    out = run([RewriteSpec("^/a$", "/b")], "/a", args="x=1")
    assert out.args is None


def test_replacement_with_args_appends_the_original_ones() -> None:
    out = run([RewriteSpec("^/u/(\\d+)$", "/user?id=$1")], "/u/7", args="x=1")
    assert (out.uri, out.args) == ("/user", "id=7&x=1")


def test_replacement_with_args_and_no_original_args() -> None:
    out = run([RewriteSpec("^/u/(\\d+)$", "/user?id=$1")], "/u/7")
    assert (out.uri, out.args) == ("/user", "id=7")


def test_trailing_question_mark_drops_the_original_args() -> None:
    out = run([RewriteSpec("^/u/(\\d+)$", "/user?id=$1?")], "/u/7", args="x=1")
    assert (out.uri, out.args) == ("/user", "id=7")
    out = run([RewriteSpec("^/a$", "/b?")], "/a", args="x=1")
    assert (out.uri, out.args) == ("/b", "")


def test_only_the_first_question_mark_splits() -> None:
    out = run([RewriteSpec("^/a$", "/b?q=what?")], "/a", args="x=1")
    assert (out.uri, out.args) == ("/b", "q=what")
    out = run([RewriteSpec("^/a$", "/b?q=1?2")], "/a")
    assert (out.uri, out.args) == ("/b", "q=1?2")


def test_args_rewritten_twice_accumulate() -> None:
    steps: list[ScriptStep] = [RewriteSpec("^/a$", "/b?p=1"), RewriteSpec("^/b$", "/c?q=2")]
    out = run(steps, "/a", args="x=0")
    assert (out.uri, out.args) == ("/c", "q=2&p=1&x=0")


def test_captures_in_args_are_escaped_when_the_client_path_was_quoted() -> None:
    step = RewriteSpec("^/s/(.*)$", "/search?q=$1")
    assert run([step], "/s/a b&c", escape=True).args == "q=a%20b%26c"
    assert run([step], "/s/a b&c", escape=False).args == "q=a b&c"
    # ... but never in the path part.
    assert run([RewriteSpec("^/s/(.*)$", "/t/$1")], "/s/a b", escape=True).uri == "/t/a b"


# ---- rewrite redirects ----


@pytest.mark.parametrize(
    ("replacement", "flag", "status", "location"),
    [
        ("http://example.com/$1", "", 302, "http://example.com/x"),
        ("https://example.com/$1", "", 302, "https://example.com/x"),
        ("$scheme://example.com/$1", "", 302, "https://example.com/x"),
        ("https://example.com/$1", "permanent", 301, "https://example.com/x"),
        ("https://example.com/$1", "redirect", 302, "https://example.com/x"),
        ("/relative/$1", "permanent", 301, "/relative/x"),
        ("/relative/$1", "redirect", 302, "/relative/x"),
        ("http://example.com/$1", "last", 302, "http://example.com/x"),
    ],
)
def test_redirects(replacement: str, flag: str, status: int, location: str) -> None:
    v = Vars(scheme="https")
    out = run([RewriteSpec("^/(.*)$", replacement, flag), SetSpec("after", "1")], "/x", v)
    assert (out.status, out.location) == (status, location)
    assert out.answered and not out.needs_location_search
    assert "after" not in v.values


def test_redirect_appends_args_with_the_right_separator() -> None:
    out = run([RewriteSpec("^/(.*)$", "https://h/$1")], "/x", args="a=1")
    assert out.location == "https://h/x?a=1"
    out = run([RewriteSpec("^/(.*)$", "https://h/$1?b=2")], "/x", args="a=1")
    assert out.location == "https://h/x?b=2&a=1"
    out = run([RewriteSpec("^/(.*)$", "https://h/$1?")], "/x", args="a=1")
    assert out.location == "https://h/x"


def test_redirect_captures_are_escaped_when_the_client_path_was_quoted() -> None:
    out = run([RewriteSpec("^/(.*)$", "https://h/$1", "permanent")], "/a b", escape=True)
    # Escaped to %20, and the redirect unescaping keeps a space escaped.
    assert out.location == "https://h/a%20b"


# ---- return ----


def test_return_with_body() -> None:
    out = run([ReturnSpec(200, "hello $1"), SetSpec("x", "1")], captures=("you",))
    assert (out.status, out.body, out.location) == (200, "hello you", None)


def test_return_redirect_codes_carry_a_location() -> None:
    for status in (301, 302, 303, 307, 308):
        out = run([ReturnSpec(status, "https://$host/new")], v=Vars(host="h"))
        assert (out.status, out.location, out.body) == (status, "https://h/new", None)


def test_return_error_without_text_leaves_the_page_to_the_caller() -> None:
    out = run([ReturnSpec(404)])
    assert (out.status, out.body) == (404, None)
    assert run([ReturnSpec(444)]).status == 444
    assert run([ReturnSpec(403, "denied")]).body == "denied"
    # Below 400 an empty text is an empty body.
    assert run([ReturnSpec(204)]).body == ""


def test_return_after_rewrite_reports_the_new_uri() -> None:
    out = run([RewriteSpec("^/a$", "/b?z=1"), ReturnSpec(200, "$uri")], "/a")
    assert (out.uri, out.args, out.status, out.uri_changed) == ("/b", "z=1", 200, True)
    assert not out.needs_location_search


def test_steps_after_return_do_not_run() -> None:
    v = Vars()
    run([ReturnSpec(200, "x"), SetSpec("x", "1")], v=v)
    assert "x" not in v.values


# ---- compile-time checks ----


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (RewriteSpec("^/", "/x", "sometimes"), "invalid parameter"),
        (RewriteSpec("^/", ""), "empty replacement"),
        (RewriteSpec("(", "/x"), "compilation failed"),
        (ReturnSpec(1000), "invalid return code"),
        (ReturnSpec(-1), "invalid return code"),
        (SetSpec("", "x"), "empty variable"),
    ],
)
def test_bad_steps_are_refused(step: ScriptStep, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_script([step])


def test_compiled_script_repr() -> None:
    assert repr(compile_script([SetSpec("a", "b")])) == "CompiledScript(1 steps)"


# ---- redirect unescaping (ngx_unescape_uri, NGX_UNESCAPE_REDIRECT) ----


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://h/plain", "https://h/plain"),
        ("/a%41b", "/aAb"),
        ("/a%20b", "/a%20b"),  # space (<= '%') stays escaped
        ("/a%25b", "/a%25b"),  # '%' itself stays escaped
        ("/a%7Fb%C3%A9", "/a%7Fb%C3%A9"),
        ("/a%2Fb", "/a/b"),
        ("/a?x=%41", "/a?x=%41"),  # nothing after the first '?'
        ("/a%3Fx=%41", "/a?x=%41"),  # a decoded '?' ends the decoding too
        ("/a%zzb", "/azzb"),  # a bad first digit loses the '%'
        ("/a%4zb", "/ab"),  # a bad second digit loses all three
        ("/a%", "/a"),
        ("/a%4", "/a"),
    ],
)
def test_unescape_redirect(location: str, expected: str) -> None:
    assert unescape_redirect(location) == expected
