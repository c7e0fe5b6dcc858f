""".dockerignore rules behave as Docker's: cases checked against Docker's documented behaviour."""

from __future__ import annotations

import pytest

from flyte_images import InvalidLayerArgument
from flyte_images._files.ignore import IgnoreRules, parse_dockerignore


def excluded(patterns: list[str], path: str) -> bool:
    return IgnoreRules.from_lines(patterns).excluded(path)


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["*.md"], "README.md", True),
        (["*.md"], "docs/guide.md", False),  # '*' does not cross '/'
        (["**/*.md"], "docs/guide.md", True),
        (["**/*.md"], "README.md", True),  # '**' matches no folder too
        (["docs"], "docs/a/b.txt", True),  # a matched folder excludes its contents
        (["docs/"], "docs/a/b.txt", True),  # trailing '/' is cleaned away
        (["/docs"], "docs/a.txt", True),  # leading '/' is cleaned away
        (["./docs"], "docs/a.txt", True),
        (["docs/*"], "docs/a/b.txt", True),  # parent 'docs/a' matches
        (["*/temp*"], "somedir/temporary.txt", True),
        (["*/temp*"], "somedir/sub/temporary.txt", False),
        (["*/*/temp*"], "a/b/temp.txt", True),
        (["temp?"], "temp1", True),
        (["temp?"], "temp12", False),
        (["temp?"], "temp/", False),
        (["[a-c]x"], "bx", True),
        (["[a-c]x"], "dx", False),
        (["*.md", "!README.md"], "README.md", False),
        (["*.md", "!README.md"], "CHANGES.md", True),
        (["!README.md", "*.md"], "README.md", True),  # the last match wins
        (["data", "!data/keep.txt"], "data/keep.txt", False),
        (["data", "!data/keep.txt"], "data/other.txt", True),
        (["**"], "anything/at/all", True),
        (["a/**"], "a/b/c", True),
        (["a/**/c"], "a/c", True),
        (["a/**/c"], "a/x/y/c", True),
        (["a/**/c"], "b/x/c", False),
        (["**/__pycache__"], "pkg/__pycache__/m.pyc", True),
        (["\\*.txt"], "*.txt", True),  # an escaped '*' is literal
        (["\\*.txt"], "a.txt", False),
        (["a.b"], "axb", False),  # '.' is literal, not a regex dot
        (["a+b"], "a+b", True),
        (["node_modules"], "src/node_modules/x", False),  # patterns are anchored at the root
    ],
)
def test_matching(patterns: list[str], path: str, expected: bool) -> None:
    assert excluded(patterns, path) is expected


def test_the_root_is_never_excluded() -> None:
    assert excluded(["**"], ".") is False
    assert excluded(["*"], "") is False


def test_parse_strips_comments_blank_lines_space_and_bom() -> None:
    text = "\ufeff# comment\n\n  *.log  \n!  keep.log\n/build/\n./dist\n"
    assert parse_dockerignore(text) == ("*.log", "!keep.log", "build", "dist")


def test_a_lone_exclamation_mark_is_refused() -> None:
    with pytest.raises(InvalidLayerArgument, match="dockerignore"):
        parse_dockerignore("!\n")


def test_a_malformed_class_is_refused_naming_the_pattern() -> None:
    with pytest.raises(InvalidLayerArgument, match=r"\[abc"):
        IgnoreRules.from_lines(["[abc"])


def test_incremental_matching_equals_full_matching() -> None:
    rules = IgnoreRules.from_lines(["a", "!a/keep", "**/*.tmp", "b/c"])
    paths = ["a", "a/keep", "a/keep/x.tmp", "a/other", "b", "b/c", "b/c/d", "b/x.tmp", "e/f/g"]
    for path in paths:
        parent = path.rpartition("/")[0]
        state = rules.state_for_dir(None, parent)
        assert rules.excluded_with(state, path) == rules.excluded(path), path


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pattern_text = st.text(alphabet="ab*?/.!", min_size=1, max_size=6).filter(lambda p: p.strip("!") != "")
segments = st.text(alphabet="ab.", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
path_text = st.lists(segments, min_size=1, max_size=4).map("/".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(pattern_text, min_size=1, max_size=4), st.lists(path_text, min_size=1, max_size=6))
def test_the_fast_checker_agrees_with_the_pattern_by_pattern_rules(patterns: list[str], paths: list[str]) -> None:
    try:
        rules = IgnoreRules.from_lines(patterns)
    except InvalidLayerArgument:
        return
    for path in paths:
        parent = path.rpartition("/")[0]
        state = rules.state_for_dir(None, parent)
        if rules.has_exceptions or not any(state):
            assert rules.checker(state)(path) == rules.excluded(path), (patterns, path)
