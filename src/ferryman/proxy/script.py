"""The rewrite-module interpreter: `set`, `rewrite` and `return` steps of a server or a
location, compiled once at load and run per request.

Owns ngx_http_rewrite_module's semantics (ngx_http_rewrite, ngx_http_rewrite_return)
and the parts of ngx_http_script.c they drive:
- steps run in order; `set` assigns a rendered template;
- `rewrite REGEX REPL [flag]` searches the current `$uri`. On a match its groups become
  the captures (and its named groups variables); on a miss the captures are *cleared*,
  as nginx clears r->ncaptures, so a location's `$1` does not survive a failed rewrite;
- a replacement starting with `http://`, `https://` or `$scheme`, or the flags
  `redirect` (302) and `permanent` (301), answer with a redirect and stop;
- otherwise the first literal `?` splits the replacement into path and arguments; the
  client's arguments are appended (`&`) unless the replacement ends with `?`, which is
  dropped; a replacement with no `?` keeps the arguments (or clears them if it ends
  with `?`). `last` and `break` stop the script; with no flag it goes on;
- `return` answers: a 301/302/303/307/308 with its text as Location, any other code
  with its text as the body (a code >= 400 with no text: the caller's error page);
- `break` ends the script where it stands (and, like a `break` rewrite, asks for no
  new location search: ngx_http_script_break_code clears r->uri_changed);
- `if (CONDITION) { ... }` runs its steps when the condition holds
  (ngx_http_script_if_code): a variable that is neither empty nor "0"; `=`/`!=` with a
  rendered string; `~`/`~*` (whose groups become the captures and named groups
  variables, as any nginx regex) and `!~`/`!~*`; the file tests `-f -d -e -x` and
  their negations, asked of the caller's `file_test`.

Pure: no I/O, no clock, no variables of its own. Rendering templates (variables and
`$1`..`$9`) and storing variables are the caller's, through `render` and `set_var`. The
location search that `last` (or a rewrite with no flag) asks for is the caller's too,
bounded by MAX_REWRITE_CYCLES.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ferryman.config.schema import (
    BreakSpec,
    IfSpec,
    ReturnSpec,
    RewriteSpec,
    ScriptStep,
    SetSpec,
)
from ferryman.http.uri import encode_args
from ferryman.routing.locations import compile_regex
from ferryman.value import Value

__all__ = [
    "MAX_REWRITE_CYCLES",
    "REDIRECT_STATUSES",
    "CompiledScript",
    "FileTest",
    "Render",
    "ScriptOutcome",
    "SetVar",
    "compile_script",
    "run_script",
    "unescape_redirect",
]

# nginx: NGX_HTTP_MAX_URI_CHANGES + 1 location searches, then 500 "rewrite or internal
# redirection cycle".
MAX_REWRITE_CYCLES = 10
# ngx_http_send_response: these codes carry a Location instead of a body.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# render(template, captures) expands variables and `$N` (captures[N-1]).
Render = Callable[[str, tuple[str, ...]], str]
SetVar = Callable[[str, str], None]
# file_test(operator, path) for `-f`, `-d`, `-e`, `-x` (without the `!`).
FileTest = Callable[[str, str], bool]

_REDIRECT_PREFIXES = ("http://", "https://", "$scheme")
_FLAG_STATUS = {"": 0, "last": 0, "break": 0, "redirect": 302, "permanent": 301}
_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}
_FILE_TESTS_ALL = ("-f", "!-f", "-d", "!-d", "-e", "!-e", "-x", "!-x")


class ScriptOutcome(Value):
    """What a script did. `args` is None when the arguments are unchanged. `flag` is
    that of the rewrite that stopped the script ("last" or "break"), else None.
    `status` is set when a step answered: with `location` for a redirect, or with
    `body` (None: the caller's default page for that status; 444: close).

    A `Value`, not a dataclass: made once for every request through a script, and a
    dataclass's `__init__` stays Python code in the compiled build (0.75 us against a
    native constructor's few dozen ns)."""

    FIELDS = ("uri", "args", "uri_changed", "flag", "status", "location", "body", "captures")
    __slots__ = FIELDS

    def __init__(
        self,
        uri: str,
        args: str | None = None,
        uri_changed: bool = False,
        flag: str | None = None,
        status: int | None = None,
        location: str | None = None,
        body: str | None = None,
        captures: tuple[str, ...] = (),
    ) -> None:
        self.uri = uri
        self.args = args
        self.uri_changed = uri_changed
        self.flag = flag
        self.status = status
        self.location = location
        self.body = body
        self.captures = captures

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def needs_location_search(self) -> bool:
        # nginx: a changed URI sends the request back to the location search unless a
        # `break` rewrite ended the script (it clears r->uri_changed).
        return self.status is None and self.uri_changed and self.flag != "break"


class _State:
    """The mutable state of one run: the current URI, arguments and captures."""

    __slots__ = (
        "args",
        "args_changed",
        "captures",
        "file_test",
        "flag",
        "on_change",
        "uri",
        "uri_changed",
    )

    def __init__(
        self,
        uri: str,
        args: str,
        captures: tuple[str, ...],
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.on_change = on_change
        self.uri = uri
        self.args = args
        self.captures = captures
        self.args_changed = False
        self.uri_changed = False
        self.flag: str | None = None
        self.file_test: FileTest | None = None

    def set_args(self, args: str) -> None:
        self.args = args
        self.args_changed = True

    def outcome(
        self, status: int | None = None, location: str | None = None, body: str | None = None
    ) -> ScriptOutcome:
        return ScriptOutcome(
            uri=self.uri,
            args=self.args if self.args_changed else None,
            uri_changed=self.uri_changed,
            flag=self.flag,
            status=status,
            location=location,
            body=body,
            captures=self.captures,
        )


class _Step:
    """One compiled step; `run` returns an outcome to stop the script, None to go on."""

    __slots__ = ()

    def run(
        self, state: _State, render: Render, set_var: SetVar, escape: bool
    ) -> ScriptOutcome | None:
        raise NotImplementedError


class _Set(_Step):
    __slots__ = ("value", "variable")

    def __init__(self, spec: SetSpec) -> None:
        if not spec.variable:
            raise ValueError("set: empty variable name")
        self.variable = spec.variable
        self.value = spec.value

    def run(
        self, state: _State, render: Render, set_var: SetVar, escape: bool
    ) -> ScriptOutcome | None:
        set_var(self.variable, render(self.value, state.captures))
        return None


class _Return(_Step):
    __slots__ = ("status", "text")

    def __init__(self, spec: ReturnSpec) -> None:
        if not 0 <= spec.status <= 999:
            raise ValueError(f'invalid return code "{spec.status}"')
        self.status = spec.status
        self.text = spec.text

    def run(
        self, state: _State, render: Render, set_var: SetVar, escape: bool
    ) -> ScriptOutcome | None:
        if self.status in REDIRECT_STATUSES:
            return state.outcome(self.status, location=render(self.text, state.captures))
        # ngx_http_script_return_code: an empty text on an error code means the error
        # page; the test is on the template, so "$empty" still sends an empty body.
        if self.text or self.status < 400:
            return state.outcome(self.status, body=render(self.text, state.captures))
        return state.outcome(self.status)


class _Rewrite(_Step):
    __slots__ = ("add_args", "args_template", "flag", "pattern", "status", "template")

    def __init__(self, spec: RewriteSpec) -> None:
        if spec.flag not in _FLAG_STATUS:
            raise ValueError(f'invalid parameter "{spec.flag}"')
        if not spec.replacement:
            raise ValueError("empty replacement")
        self.pattern = compile_regex(spec.pattern)
        # A final `?` is not part of the URI: it only drops the client's arguments.
        self.add_args = not spec.replacement.endswith("?")
        self.template = spec.replacement if self.add_args else spec.replacement[:-1]
        redirect = self.template.startswith(_REDIRECT_PREFIXES)
        self.status = _FLAG_STATUS[spec.flag] or (302 if redirect else 0)
        self.flag: str | None = spec.flag if spec.flag in ("last", "break") else None
        # A redirect keeps its `?` in the Location; otherwise it starts the arguments.
        self.args_template: str | None = None
        if not self.status and "?" in self.template:
            self.template, _, self.args_template = self.template.partition("?")

    def run(
        self, state: _State, render: Render, set_var: SetVar, escape: bool
    ) -> ScriptOutcome | None:
        match = self.pattern.search(state.uri)
        if match is None:
            state.captures = ()
            return None
        state.captures = tuple(g or "" for g in match.groups())
        for name, value in match.groupdict().items():
            set_var(name, value or "")
        if self.status:
            return self._redirect(state, render, escape)
        uri = render(self.template, state.captures)
        if not uri:
            # nginx: "the rewritten URI has a zero length".
            return state.outcome(500)
        self._rewrite_args(state, render, escape)
        state.uri = uri
        state.uri_changed = True
        state.flag = self.flag
        if state.on_change is not None:
            # Later steps of this script render $uri/$args: they must see the new ones.
            state.on_change(state.uri, state.args)
        return None if self.flag is None else state.outcome()

    def _rewrite_args(self, state: _State, render: Render, escape: bool) -> None:
        if self.args_template is None:
            if not self.add_args:
                state.set_args("")
            return
        captures = _escaped(state.captures) if escape else state.captures
        args = render(self.args_template, captures)
        if self.add_args and state.args:
            args = f"{args}&{state.args}"
        state.set_args(args)

    def _redirect(self, state: _State, render: Render, escape: bool) -> ScriptOutcome:
        captures = _escaped(state.captures) if escape else state.captures
        location = unescape_redirect(render(self.template, captures))
        if self.add_args and state.args:
            location += ("&" if "?" in self.template else "?") + state.args
        return state.outcome(self.status, location=location)


class _Break(_Step):
    __slots__ = ()

    def run(
        self, state: _State, render: Render, set_var: SetVar, escape: bool
    ) -> ScriptOutcome | None:
        state.flag = "break"
        return state.outcome()


class _If(_Step):
    __slots__ = ("negate", "operand", "operator", "pattern", "steps", "value")

    def __init__(self, spec: IfSpec) -> None:
        operator = spec.operator
        if operator not in _IF_TESTS:
            raise ValueError(f'unsupported "if" operator "{operator}"')
        self.operand = spec.operand
        self.negate = operator.startswith("!")
        self.operator = operator.lstrip("!")
        self.value = spec.value
        self.pattern = (
            compile_regex(spec.value, caseless=self.operator == "~*")
            if self.operator in ("~", "~*")
            else None
        )
        self.steps = tuple(_compile_step(step) for step in spec.steps)

    def run(
        self, state: _State, render: Render, set_var: SetVar, escape: bool
    ) -> ScriptOutcome | None:
        if not self.holds(state, render, set_var):
            return None
        for step in self.steps:
            outcome = step.run(state, render, set_var, escape)
            if outcome is not None:
                return outcome
        return None

    def holds(self, state: _State, render: Render, set_var: SetVar) -> bool:
        value = render(self.operand, state.captures)
        op = self.operator
        if op == "":
            return value not in ("", "0")
        if op == "=":
            result = value == render(self.value, state.captures)
        elif self.pattern is not None:
            match = self.pattern.search(value)
            result = match is not None
            if match is not None and not self.negate:
                state.captures = tuple(g or "" for g in match.groups())
                for name, group in match.groupdict().items():
                    set_var(name, group or "")
        else:  # a file test
            test = state.file_test
            result = test is not None and test(op, value)
        return result != self.negate


# Operators after the `!` is taken off, and which take one.
_IF_TESTS = frozenset({"", "=", "!=", "~", "~*", "!~", "!~*", *_FILE_TESTS_ALL})


class CompiledScript:
    __slots__ = ("steps",)

    def __init__(self, steps: tuple[_Step, ...]) -> None:
        self.steps = steps

    def __repr__(self) -> str:
        return f"CompiledScript({len(self.steps)} steps)"


def compile_script(steps: Sequence[ScriptStep]) -> CompiledScript:
    """Compile once at load; raises ValueError with nginx's wording on a bad step."""
    return CompiledScript(tuple(_compile_step(step) for step in steps))


def _compile_step(step: ScriptStep) -> _Step:
    if isinstance(step, SetSpec):
        return _Set(step)
    if isinstance(step, RewriteSpec):
        return _Rewrite(step)
    if isinstance(step, BreakSpec):
        return _Break()
    if isinstance(step, IfSpec):
        return _If(step)
    return _Return(step)


def run_script(
    script: CompiledScript,
    uri: str,
    render: Render,
    set_var: SetVar,
    *,
    args: str = "",
    captures: tuple[str, ...] = (),
    escape_captures: bool = False,
    on_change: Callable[[str, str], None] | None = None,
    file_test: FileTest | None = None,
) -> ScriptOutcome:
    """Run the steps on `uri` (nginx's `$uri`) and `args` (`$args`). `captures` are
    those in force before the script (a regex location's). `escape_captures` is nginx's
    `r->quoted_uri || r->plus_in_uri` (the client's path had `%` or `+`): captures
    placed in arguments or in a redirect are then escaped with NGX_ESCAPE_ARGS."""
    state = _State(uri, args, captures, on_change)
    state.file_test = file_test
    for step in script.steps:
        outcome = step.run(state, render, set_var, escape_captures)
        if outcome is not None:
            return outcome
    return state.outcome()


def _escaped(captures: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(encode_args(_to_bytes(c)).decode("ascii") for c in captures)


def _to_bytes(value: str) -> bytes:
    # The caller's str is latin-1-decoded bytes when it follows our advice; anything
    # else is text and goes out as UTF-8.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def unescape_redirect(location: str) -> str:
    """ngx_unescape_uri(NGX_UNESCAPE_REDIRECT), applied by nginx to a rewrite's
    redirect: before the first `?`, %XX of a printable byte above `%` is decoded, other
    escapes are kept; a malformed escape loses its `%` (and a bad second digit, both
    digits), as in nginx."""
    if "%" not in location:
        return location
    out: list[str] = []
    i, size = 0, len(location)
    while i < size:
        c = location[i]
        if c == "?":
            break
        if c != "%":
            out.append(c)
            i += 1
            continue
        hi = _HEX.get(location[i + 1 : i + 2], -1)
        lo = _HEX.get(location[i + 2 : i + 3], -1)
        if hi < 0:
            out.append(location[i + 1 : i + 2])
            i += 2
        elif lo < 0:
            i += 3
        elif hi * 16 + lo == 0x3F:
            out.append("?")
            i += 3
            break
        else:
            byte = hi * 16 + lo
            out.append(chr(byte) if 0x25 < byte < 0x7F else location[i : i + 3])
            i += 3
    return "".join(out) + location[i:]
