"""Property tests: select() against a direct model, order independence, monotonicity,
minimize() and merge."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from spec_testlib import full_tree, walk, walk_listing

from shrinkwrap_async.spec.merge import covers, format_rules, merge_specs, minimize
from shrinkwrap_async.spec.tree import Rule, RuleKind, Spec

# Rules use names a-c up to 3 levels; the tree has one name more and one level more, so
# that every rule path can name a directory and no directory is entirely named by rules.
TREE = full_tree("abcd", 4)
POSITIVE = (RuleKind.EXACT, RuleKind.FLAT, RuleKind.TREE)

parts = st.lists(st.sampled_from("abc"), min_size=0, max_size=3).map(tuple)
positive_rules = st.builds(Rule, parts, st.sampled_from(POSITIVE))
any_rules = st.builds(Rule, parts, st.sampled_from(list(RuleKind)))
rule_lists = st.lists(any_rules, max_size=6)
positive_lists = st.lists(positive_rules, max_size=6)


def spec_of(rules: list[Rule]) -> Spec:
    return Spec.parse(format_rules(rules))


def model(rules: list[Rule], tree: dict[str, bool]) -> set[str]:
    """The documented semantics, path by path, without a trie."""
    exclusions = [r.parts for r in rules if r.kind is RuleKind.EXCLUDE]
    positives = [
        r
        for r in rules
        if r.kind is not RuleKind.EXCLUDE and not any(r.parts[: len(e)] == e for e in exclusions)
    ]

    def parts_of(path: str) -> tuple[str, ...]:
        return tuple(p for p in path.split("/") if p)

    def excluded(p: tuple[str, ...]) -> bool:
        return any(p[: len(e)] == e for e in exclusions)

    def under_tree(p: tuple[str, ...]) -> bool:
        return any(r.kind is RuleKind.TREE and p[: len(r.parts)] == r.parts for r in positives)

    def included(p: tuple[str, ...]) -> bool:
        if not p:
            return True  # the root is always created
        if excluded(p):
            return False
        return (
            under_tree(p)
            or any(r.kind is RuleKind.FLAT and r.parts in (p, p[:-1]) for r in positives)
            or any(r.parts[: len(p)] == p for r in positives)
        )

    def descended(p: tuple[str, ...]) -> bool:
        return included(p) and (
            under_tree(p)
            or any(r.kind is RuleKind.FLAT and r.parts == p for r in positives)
            or any(len(r.parts) > len(p) and r.parts[: len(p)] == p for r in positives)
        )

    result = set()
    for path in tree:
        p = parts_of(path)
        if included(p) and all(descended(p[:depth]) for depth in range(len(p))):
            result.add(path)
    return result


@settings(max_examples=300, deadline=None)
@given(rule_lists)
def test_select_matches_the_model(rules: list[Rule]) -> None:
    assert walk(spec_of(rules), TREE) == model(rules, TREE)


@settings(max_examples=150, deadline=None)
@given(rule_lists, st.randoms(use_true_random=False))
def test_line_order_does_not_matter(rules: list[Rule], random) -> None:
    shuffled = list(rules)
    random.shuffle(shuffled)
    assert walk(spec_of(shuffled), TREE) == walk(spec_of(rules), TREE)
    assert spec_of(shuffled).digest() == spec_of(rules).digest()


@settings(max_examples=150, deadline=None)
@given(rule_lists, positive_rules)
def test_adding_a_positive_rule_never_removes_anything(rules: list[Rule], extra: Rule) -> None:
    assert walk(spec_of(rules), TREE) <= walk(spec_of([*rules, extra]), TREE)


@settings(max_examples=150, deadline=None)
@given(rule_lists, parts)
def test_adding_an_exclusion_never_adds_anything(rules: list[Rule], excluded) -> None:
    more = [*rules, Rule(excluded, RuleKind.EXCLUDE)]
    assert walk(spec_of(more), TREE) <= walk(spec_of(rules), TREE)


@settings(max_examples=300, deadline=None)
@given(rule_lists)
def test_minimize_keeps_the_selection_and_is_minimal(rules: list[Rule]) -> None:
    minimal = minimize(rules)
    assert walk(spec_of(minimal), TREE) == walk(spec_of(rules), TREE)
    assert minimize(minimal) == minimal
    positives = [r for r in minimal if r.kind is not RuleKind.EXCLUDE]
    for a in positives:
        for b in positives:
            assert a is b or not covers(a, b), (a.text, b.text)
    # every rule left matters: without it the selection changes
    for index in range(len(minimal)):
        rest = minimal[:index] + minimal[index + 1 :]
        assert walk(spec_of(rest), TREE) != walk(spec_of(minimal), TREE), minimal[index].text


@settings(max_examples=200, deadline=None)
@given(st.lists(rule_lists, min_size=1, max_size=3))
def test_merge_covers_the_union_and_is_idempotent(rule_sets: list[list[Rule]]) -> None:
    specs = [spec_of(rules) for rules in rule_sets]
    merged, _notes = merge_specs(specs)
    selected = walk(spec_of(merged), TREE)
    for spec in specs:
        assert walk(spec, TREE) <= selected
    again, _ = merge_specs([spec_of(merged), spec_of(merged)])
    assert again == merged
    assert minimize(merged) == merged


@settings(max_examples=200, deadline=None)
@given(st.lists(positive_lists, min_size=1, max_size=3))
def test_merge_without_exclusions_is_exactly_the_union(rule_sets: list[list[Rule]]) -> None:
    specs = [spec_of(rules) for rules in rule_sets]
    merged, notes = merge_specs(specs)
    assert notes == []
    union = set().union(*(walk(spec, TREE) for spec in specs))
    assert walk(spec_of(merged), TREE) == union


def test_merge_keeps_an_exclusion_nobody_else_reaches() -> None:
    merged, notes = merge_specs([Spec.parse("/a/*\n!/a/b"), Spec.parse("/c/*")])
    assert format_rules(merged) == "/a/*\n/c/*\n!/a/b\n"
    assert notes == []
    merged, notes = merge_specs([Spec.parse("/a/*\n!/a/b"), Spec.parse("/a/b/c")])
    assert format_rules(merged) == "/a/*\n"
    assert len(notes) == 1 and "'!/a/b' dropped" in notes[0]


@settings(max_examples=150, deadline=None)
@given(rule_lists)
def test_descends_into_names_the_directories_the_walk_lists(rules: list[Rule]) -> None:
    spec = spec_of(rules)
    answered = {path for path, is_dir in TREE.items() if is_dir and spec.descends_into(path)}
    assert answered == walk_listing(spec_of(rules), TREE)[1]
    assert spec.warnings() == spec_of(rules).warnings()  # it recorded no hit
