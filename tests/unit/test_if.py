"""proxy/script.py: `if` conditions and `break`."""

from __future__ import annotations

from ferryman.config.schema import BreakSpec, IfSpec, ReturnSpec, ScriptStep, SetSpec
from ferryman.proxy.script import ScriptOutcome, compile_script, run_script


def run(
    steps: list[ScriptStep], variables: dict[str, str], files: dict[str, str] | None = None
) -> tuple[ScriptOutcome, dict[str, str]]:
    store = dict(variables)

    def render(template: str, captures: tuple[str, ...]) -> str:
        out = template
        for i, c in enumerate(captures, start=1):
            out = out.replace(f"${i}", c)
        for name, value in sorted(store.items(), key=lambda kv: -len(kv[0])):
            out = out.replace(f"${name}", value)
        return out

    def set_var(name: str, value: str) -> None:
        store[name] = value

    def file_test(op: str, path: str) -> bool:
        kind = (files or {}).get(path)
        return {"-f": kind == "file", "-d": kind == "dir", "-e": kind is not None}.get(
            op, kind == "exe"
        )

    outcome = run_script(compile_script(steps), "/x", render, set_var, file_test=file_test)
    return outcome, store


def answer(cond: IfSpec, variables: dict[str, str], files: dict[str, str] | None = None) -> int:
    steps: list[ScriptStep] = [
        IfSpec(cond.operand, cond.operator, cond.value, (ReturnSpec(200, "yes"),))
    ]
    outcome, _ = run([*steps, ReturnSpec(204)], variables, files)
    assert outcome.status is not None
    return outcome.status


def test_truthiness() -> None:
    assert answer(IfSpec("$a"), {"a": "1"}) == 200
    assert answer(IfSpec("$a"), {"a": "0"}) == 204
    assert answer(IfSpec("$a"), {"a": ""}) == 204


def test_string_comparisons() -> None:
    assert answer(IfSpec("$a", "=", "x"), {"a": "x"}) == 200
    assert answer(IfSpec("$a", "=", "x"), {"a": "y"}) == 204
    assert answer(IfSpec("$a", "!=", "x"), {"a": "y"}) == 200
    assert answer(IfSpec("$a", "=", "$b"), {"a": "q", "b": "q"}) == 200


def test_regex_comparisons_and_captures() -> None:
    assert answer(IfSpec("$a", "~", "^ab"), {"a": "abc"}) == 200
    assert answer(IfSpec("$a", "~", "^AB"), {"a": "abc"}) == 204
    assert answer(IfSpec("$a", "~*", "^AB"), {"a": "abc"}) == 200
    assert answer(IfSpec("$a", "!~", "^ab"), {"a": "abc"}) == 204
    assert answer(IfSpec("$a", "!~*", "^AB"), {"a": "xyz"}) == 200
    steps: list[ScriptStep] = [IfSpec("$a", "~", "^n(o+)$", (ReturnSpec(200, "got $1"),))]
    outcome, _ = run(steps, {"a": "nooo"})
    assert outcome.body == "got ooo"


def test_file_tests() -> None:
    files = {"/f": "file", "/d": "dir", "/e": "exe"}
    assert answer(IfSpec("/f", "-f"), {}, files) == 200
    assert answer(IfSpec("/d", "-f"), {}, files) == 204
    assert answer(IfSpec("/d", "-d"), {}, files) == 200
    assert answer(IfSpec("/nothing", "!-e"), {}, files) == 200
    assert answer(IfSpec("/d", "-e"), {}, files) == 200
    assert answer(IfSpec("/e", "-x"), {}, files) == 200
    assert answer(IfSpec("/f", "!-f"), {}, files) == 204


def test_nested_steps_and_break() -> None:
    steps: list[ScriptStep] = [
        IfSpec("$a", "", "", (SetSpec("b", "set"), BreakSpec())),
        ReturnSpec(200, "not reached"),
    ]
    outcome, store = run(steps, {"a": "1"})
    assert outcome.status is None and outcome.flag == "break" and store["b"] == "set"
    assert not outcome.needs_location_search
    outcome, _ = run(steps, {"a": ""})
    assert outcome.status == 200
