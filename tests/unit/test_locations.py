"""nginx location selection: exact, longest prefix, `^~`, regexes in order, nesting."""

from __future__ import annotations

import pytest

from ferryman.routing.locations import LocationEntry, LocationTree, compile_regex


def loc(
    kind: str, path: str, value: str | None = None, *children: LocationEntry[str]
) -> LocationEntry[str]:
    return LocationEntry(kind, path, value if value is not None else f"{kind}:{path}", children)


def tree(*entries: LocationEntry[str]) -> LocationTree[str]:
    return LocationTree(entries)


# ---- the example of the nginx `location` documentation ----

DOCS = tree(
    loc("exact", "/", "A"),
    loc("prefix", "/", "B"),
    loc("prefix", "/documents/", "C"),
    loc("prefix_priority", "/images/", "D"),
    loc("regex_icase", r"\.(gif|jpg|jpeg)$", "E"),
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/", "A"),
        ("/index.html", "B"),
        ("/documents/document.html", "C"),
        ("/images/1.gif", "D"),
        ("/documents/1.jpg", "E"),
        ("/documents/1.JPG", "E"),
    ],
)
def test_nginx_documentation_example(uri: str, expected: str) -> None:
    assert DOCS.find(uri) == expected


# ---- single rules ----


def test_exact_wins_over_a_longer_prefix_and_regexes() -> None:
    t = tree(loc("prefix", "/a"), loc("exact", "/a/b"), loc("regex", "b$"))
    assert t.find("/a/b") == "exact:/a/b"
    assert t.find("/a/bb") == "regex:b$"
    assert t.find("/a/c") == "prefix:/a"


def test_exact_matches_only_the_whole_path() -> None:
    t = tree(loc("exact", "/x"))
    assert t.find("/x") == "exact:/x"
    assert t.find("/x/") is None
    assert t.find("/") is None


def test_longest_prefix_wins_whatever_the_order() -> None:
    for order in ((0, 1, 2), (2, 1, 0), (1, 2, 0)):
        entries = [loc("prefix", "/"), loc("prefix", "/api"), loc("prefix", "/api/v2")]
        t = tree(*(entries[i] for i in order))
        assert t.find("/api/v2/users") == "prefix:/api/v2"
        assert t.find("/api/v1") == "prefix:/api"
        assert t.find("/apix") == "prefix:/api"  # prefixes are strings, not segments
        assert t.find("/other") == "prefix:/"


def test_regex_overrides_the_longest_prefix() -> None:
    t = tree(loc("prefix", "/static/"), loc("regex", r"\.php$"))
    assert t.find("/static/x.php") == "regex:\\.php$"
    assert t.find("/static/x.css") == "prefix:/static/"


def test_prefix_priority_skips_regexes() -> None:
    t = tree(loc("prefix_priority", "/static/"), loc("regex", r"\.php$"))
    assert t.find("/static/x.php") == "prefix_priority:/static/"
    assert t.find("/other/x.php") == "regex:\\.php$"


def test_prefix_priority_counts_only_when_it_is_the_longest() -> None:
    t = tree(loc("prefix_priority", "/s/"), loc("prefix", "/s/deep/"), loc("regex", "php"))
    assert t.find("/s/deep/x.php") == "regex:php"
    assert t.find("/s/x.php") == "prefix_priority:/s/"


def test_regexes_are_tried_in_order_of_appearance() -> None:
    t = tree(loc("regex", "a", "first"), loc("regex", "ab", "second"))
    assert t.find("/ab") == "first"
    t = tree(loc("regex", "ab", "first"), loc("regex", "a", "second"))
    assert t.find("/ab") == "first"
    assert t.find("/a") == "second"


def test_regex_is_a_search_not_a_full_match() -> None:
    t = tree(loc("regex", "img"))
    assert t.find("/x/img/y") == "regex:img"


def test_regex_case_sensitivity() -> None:
    t = tree(loc("regex", r"\.PNG$", "cs"), loc("regex_icase", r"\.gif$", "ci"))
    assert t.find("/a.PNG") == "cs"
    assert t.find("/a.png") is None
    assert t.find("/a.GiF") == "ci"


def test_case_insensitive_is_ascii_only_like_pcre_without_utf() -> None:
    t = tree(loc("regex_icase", "é"))
    assert t.find("/É") is None
    assert tree(loc("regex", r"^/\w+$")).find("/é") is None


def test_nothing_matches() -> None:
    t = tree(loc("prefix", "/api"), loc("regex", "x$"))
    assert t.find("/other") is None
    assert t.find_with_captures("/other") == (None, ())
    assert t.match("/other") is None


def test_exact_and_prefix_of_the_same_path_coexist() -> None:
    t = tree(loc("prefix", "/a"), loc("exact", "/a"))
    assert t.find("/a") == "exact:/a"
    assert t.find("/ab") == "prefix:/a"


# ---- captures ----


def test_regex_captures() -> None:
    t = tree(loc("regex", r"^/user/(\d+)(/(\w+))?$"))
    assert t.find_with_captures("/user/42/posts") == (t.find("/user/1"), ("42", "/posts", "posts"))
    # A group that did not take part renders as "".
    assert t.find_with_captures("/user/42")[1] == ("42", "", "")


def test_prefix_match_has_no_captures() -> None:
    t = tree(loc("prefix", "/"), loc("regex", "(x)"))
    assert t.find_with_captures("/a") == ("prefix:/", ())


def test_named_captures_with_pcre_syntax() -> None:
    t = tree(loc("regex", r"^/(?<app>[^/]+)/(?'rest'.*)$"))
    m = t.match("/shop/cart/1")
    assert m is not None
    assert m.captures == ("shop", "cart/1")
    assert m.named == (("app", "shop"), ("rest", "cart/1"))


# ---- nesting ----


def test_nested_prefix_inside_prefix() -> None:
    t = tree(
        loc("prefix", "/"),
        loc("prefix", "/api/", "api", loc("prefix", "/api/admin/", "admin")),
    )
    assert t.find("/api/admin/users") == "admin"
    assert t.find("/api/users") == "api"
    assert t.find("/x") == "prefix:/"


def test_nested_exact_inside_prefix() -> None:
    t = tree(loc("prefix", "/a/", "a", loc("exact", "/a/x", "ax")))
    assert t.find("/a/x") == "ax"
    assert t.find("/a/xy") == "a"


def test_nested_regex_is_tried_before_the_outer_regexes() -> None:
    t = tree(
        loc("prefix", "/app/", "app", loc("regex", r"\.php$", "inner")),
        loc("regex", r"\.php$", "outer"),
    )
    assert t.find("/app/x.php") == "inner"
    assert t.find("/other/x.php") == "outer"
    assert t.find("/app/x.css") == "app"


def test_outer_regex_applies_when_no_nested_one_matches() -> None:
    t = tree(
        loc("prefix", "/app/", "app", loc("prefix", "/app/deep/", "deep")),
        loc("regex", r"\.php$", "outer"),
    )
    assert t.find("/app/deep/x.php") == "outer"
    # ... and the deepest prefix is used when none does.
    assert t.find("/app/deep/x.css") == "deep"


def test_nested_prefix_priority_guards_only_the_nested_regexes() -> None:
    # nginx reads `noregex` from the prefix chosen at each level: a `^~` inside
    # /app/ stops /app/'s regexes, not the server's.
    t = tree(
        loc(
            "prefix",
            "/app/",
            "app",
            loc("prefix_priority", "/app/static/", "static"),
            loc("regex", r"\.css$", "inner"),
        ),
        loc("regex", r"\.js$", "outer"),
    )
    assert t.find("/app/static/x.css") == "static"
    assert t.find("/app/static/x.js") == "outer"
    assert t.find("/app/x.css") == "inner"


def test_outer_prefix_priority_skips_outer_regexes_but_not_nested_ones() -> None:
    t = tree(
        loc("prefix_priority", "/p/", "p", loc("regex", r"\.js$", "inner")),
        loc("regex", r"\.js$", "outer"),
    )
    assert t.find("/p/x.js") == "inner"
    assert t.find("/p/x.css") == "p"


def test_locations_nested_in_a_regex_location() -> None:
    t = tree(
        loc("regex", r"^/img/", "img", loc("regex", r"\.(png)$", "png")),
    )
    assert t.find("/img/a.png") == "png"
    assert t.find_with_captures("/img/a.png")[1] == ("png",)
    assert t.find("/img/a.gif") == "img"


def test_nested_regex_miss_keeps_the_outer_captures() -> None:
    t = tree(loc("regex", r"^/(\w+)/", "outer", loc("regex", r"(zzz)", "inner")))
    assert t.find_with_captures("/shop/x") == ("outer", ("shop",))


# ---- build-time checks ----


def test_nested_location_outside_its_parent_is_refused() -> None:
    with pytest.raises(ValueError, match='location "/b/" is outside location "/a/"'):
        tree(loc("prefix", "/a/", None, loc("prefix", "/b/")))
    with pytest.raises(ValueError, match="outside"):
        tree(loc("prefix", "/a/", None, loc("exact", "/a")))


def test_nested_regex_is_never_outside() -> None:
    tree(loc("prefix", "/a/", None, loc("regex", "^/b/")))


def test_prefix_under_a_regex_must_start_with_the_regex_text() -> None:
    # nginx compares names literally, whatever the parent's kind.
    tree(loc("regex", "/x", None, loc("prefix", "/x/y")))
    with pytest.raises(ValueError, match="outside"):
        tree(loc("regex", r"^/x", None, loc("prefix", "/x/y")))


def test_nothing_nests_in_exact_or_named_and_named_only_at_top() -> None:
    with pytest.raises(ValueError, match="cannot be inside the exact location"):
        tree(loc("exact", "/a", None, loc("prefix", "/a/b")))
    with pytest.raises(ValueError, match="cannot be inside the named location"):
        tree(loc("named", "@n", None, loc("prefix", "/a")))
    with pytest.raises(ValueError, match="can be on the server level only"):
        tree(loc("prefix", "/", None, loc("named", "@n")))


def test_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match='duplicate location "/a"'):
        tree(loc("prefix", "/a"), loc("prefix_priority", "/a"))
    with pytest.raises(ValueError, match="duplicate"):
        tree(loc("exact", "/a"), loc("exact", "/a"))
    # The same regex twice is allowed; the first wins.
    assert tree(loc("regex", "x", "1"), loc("regex", "x", "2")).find("/x") == "1"


def test_bad_kind_and_bad_regex_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid location modifier"):
        tree(loc("glob", "/a"))
    with pytest.raises(ValueError, match="compilation failed"):
        tree(loc("regex", "(unclosed"))


# ---- named locations ----


def test_named_locations() -> None:
    t = tree(loc("prefix", "/"), loc("named", "@fallback", "fb"), loc("named", "other", "o"))
    assert t.named("@fallback") == "fb"
    assert t.named("fallback") == "fb"
    assert t.named("@other") == "o"
    assert t.named("@missing") is None
    # Named locations are never found by the search.
    assert t.find("@fallback") is None


def test_first_named_location_of_a_name_wins() -> None:
    assert tree(loc("named", "@n", "1"), loc("named", "@n", "2")).named("@n") == "1"


# ---- auto-redirect (proxy_pass in a location ending with `/`) ----


def redirecting(
    kind: str, path: str, value: str, *children: LocationEntry[str]
) -> LocationEntry[str]:
    return LocationEntry(kind, path, value, children, auto_redirect=True)


def test_auto_redirect_to_the_path_with_a_slash() -> None:
    t = tree(loc("prefix", "/", "root"), redirecting("prefix", "/user/", "user"))
    m = t.match("/user")
    assert m is not None and (m.value, m.redirect_to) == ("user", "/user/")
    assert t.find("/user") == "user"  # nginx uses that location's settings first
    m = t.match("/user/x")
    assert m is not None and (m.value, m.redirect_to) == ("user", None)
    m = t.match("/use")
    assert m is not None and (m.value, m.redirect_to) == ("root", None)


def test_no_auto_redirect_without_the_flag_or_the_final_slash() -> None:
    t = tree(loc("prefix", "/", "root"), loc("prefix", "/user/", "user"))
    assert t.find("/user") == "root"
    t = tree(loc("prefix", "/", "root"), redirecting("prefix", "/user", "user"))
    m = t.match("/use")
    assert m is not None and m.redirect_to is None


def test_auto_redirect_loses_to_a_location_named_exactly_the_path() -> None:
    t = tree(redirecting("prefix", "/user/", "user"), loc("exact", "/user", "exact"))
    m = t.match("/user")
    assert m is not None and (m.value, m.redirect_to) == ("exact", None)
    t = tree(redirecting("prefix", "/user/", "user"), loc("prefix", "/user", "prefix"))
    m = t.match("/user")
    assert m is not None and (m.value, m.redirect_to) == ("prefix", None)


def test_auto_redirect_beats_shorter_prefixes_and_skips_regexes() -> None:
    t = tree(
        loc("prefix", "/us", "us"),
        redirecting("prefix", "/user/", "user"),
        loc("regex", "^/user$", "regex"),
    )
    m = t.match("/user")
    assert m is not None and (m.value, m.redirect_to) == ("user", "/user/")


def test_auto_redirect_in_nested_locations() -> None:
    t = tree(loc("prefix", "/api/", "api", redirecting("prefix", "/api/v1/", "v1")))
    m = t.match("/api/v1")
    assert m is not None and (m.value, m.redirect_to) == ("v1", "/api/v1/")
    # Under a regex location nginx turns the inner result into a plain match.
    t = tree(loc("regex", "/r", "r", redirecting("prefix", "/r/x/", "x")))
    m = t.match("/r/x")
    assert m is not None and (m.value, m.redirect_to) == ("x", None)


# ---- fast path and representation ----


def test_single_root_prefix_fast_path() -> None:
    t = tree(loc("prefix", "/", "root"))
    assert t.find("/anything") == "root"
    assert t.find_with_captures("/x") == ("root", ())
    m = t.match("/x")
    assert m is not None and m.value == "root" and m.captures == ()


def test_root_prefix_with_children_is_searched() -> None:
    t = tree(loc("prefix", "/", "root", loc("prefix", "/a", "a")))
    assert t.find("/a") == "a"
    assert t.find("/b") == "root"


def test_empty_tree() -> None:
    assert tree().find("/") is None


def test_repr() -> None:
    assert repr(loc("prefix", "/a", "v")) == "LocationEntry('prefix', '/a', 'v', 0 children)"
    assert repr(DOCS) == "LocationTree(1 exact, 3 prefix, 1 regex, 0 named at the top level)"


# ---- PCRE translation ----


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        (r"a\z", "a", True),
        (r"a\z", "a\n", False),
        (r"a\Z", "a\n", True),
        (r"a$", "a\n", True),  # PCRE and Python agree on `$`
        (r"(?<=x)y", "xy", True),  # a lookbehind is not a named group
        (r"(?<!x)y", "xy", False),
        (r"[(?<a>]", "<", True),  # inside a class nothing is translated
        (r"\(?<a>", "<a>", True),  # an escaped parenthesis is not a group
    ],
)
def test_pcre_translation(pattern: str, subject: str, matches: bool) -> None:
    assert (compile_regex(pattern).search(subject) is not None) is matches


def test_pcre_only_syntax_is_refused_at_load() -> None:
    with pytest.raises(ValueError):
        compile_regex(r"\Qa.b\E")
