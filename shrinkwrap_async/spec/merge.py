"""Minimal specs: drop rules that other rules cover, merge specs, write them sorted.

Coverage between two positive rules (see :mod:`shrinkwrap_async.spec.tree` for meanings):

* ``/p/*`` covers every rule at or below ``p``;
* ``^/p/*`` covers ``^/p/*``, ``/p`` and ``/p/c`` (a direct child);
* ``/p`` (exact) is covered by any positive rule at or below ``p``, since a rule below
  makes ``p`` pass-through, which selects the same as ``/p`` does.

An exclusion is covered by an exclusion at or above it, and dropped when no positive rule
reaches into it. The exact root rule ``/`` is dropped: the root is always created.
Positive rules inside an exclusion have no effect and are dropped.

Merging specs from several jobs must select at least what each of them selects. An
exclusion of one spec is therefore kept only when no other spec selects anything inside
it; otherwise it is dropped (the merged spec selects a little more) and a note says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shrinkwrap_async.spec.tree import Rule, RuleKind, Spec, component_covers, prefix_covers

__all__ = ["covers", "format_rules", "merge_specs", "minimize", "sort_rules"]

_KIND_ORDER = {RuleKind.TREE: 0, RuleKind.FLAT: 1, RuleKind.EXACT: 2, RuleKind.EXCLUDE: 3}


def covers(wide: Rule, narrow: Rule) -> bool:
    """Whether positive rule ``wide`` selects everything positive rule ``narrow`` selects."""
    if wide.kind is RuleKind.EXCLUDE or narrow.kind is RuleKind.EXCLUDE:
        raise ValueError("covers() compares positive rules only")
    if wide.kind is RuleKind.TREE and prefix_covers(wide.parts, narrow.parts):
        return True
    if narrow.kind is RuleKind.EXACT and prefix_covers(narrow.parts, wide.parts):
        # wide is at or below narrow's path: it makes that path pass-through
        return narrow.parts == wide.parts or _literal(narrow.parts)
    if wide.kind is RuleKind.FLAT:
        if narrow.kind is RuleKind.FLAT:
            return _same_or_covered(wide.parts, narrow.parts)
        if narrow.kind is RuleKind.EXACT:
            depth = len(narrow.parts) - len(wide.parts)
            return depth in (0, 1) and prefix_covers(wide.parts, narrow.parts)
    if wide.kind is RuleKind.EXACT and narrow.kind is RuleKind.EXACT:
        return _same_or_covered(wide.parts, narrow.parts)
    return False


def _literal(parts: tuple[str, ...]) -> bool:
    return not Rule(parts, RuleKind.EXACT).has_glob


def _same_or_covered(wide: tuple[str, ...], narrow: tuple[str, ...]) -> bool:
    return len(wide) == len(narrow) and prefix_covers(wide, narrow)


def _reaches_into(rule: Rule, excluded: tuple[str, ...]) -> bool:
    """Whether positive ``rule`` could select something at or below ``excluded``."""
    parts = rule.parts
    if rule.kind is RuleKind.TREE and _overlaps(parts, excluded[: len(parts)]):
        return True
    if rule.kind is RuleKind.FLAT and len(excluded) in (len(parts), len(parts) + 1):
        return _overlaps(parts, excluded[: len(parts)])
    return len(parts) >= len(excluded) and _overlaps(parts[: len(excluded)], excluded)


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two component sequences of equal length could name the same path."""
    return len(a) == len(b) and all(
        component_covers(x, y) or component_covers(y, x) or (_glob(x) and _glob(y))
        for x, y in zip(a, b, strict=True)
    )


def _glob(part: str) -> bool:
    return Rule((part,), RuleKind.EXACT).has_glob


def minimize(rules: Iterable[Rule]) -> list[Rule]:
    """The rules without duplicates and without rules another rule covers, sorted."""
    unique: dict[tuple[tuple[str, ...], str], Rule] = {}
    for rule in rules:
        unique.setdefault(rule.key(), rule)
    exclusions = [r for r in unique.values() if r.kind is RuleKind.EXCLUDE]
    exclusions = [
        e
        for e in exclusions
        if not any(o is not e and prefix_covers(o.parts, e.parts) for o in exclusions)
    ]
    positives = [
        r
        for r in unique.values()
        if r.kind is not RuleKind.EXCLUDE
        and not any(prefix_covers(e.parts, r.parts) for e in exclusions)
        and not (r.kind is RuleKind.EXACT and not r.parts)  # "/": the root is always made
    ]
    kept: list[Rule] = []
    # Wide rules first, so that the narrow ones are compared against what is kept.
    for rule in sorted(positives, key=lambda r: (_KIND_ORDER[r.kind], len(r.parts), r.parts)):
        if not any(covers(other, rule) for other in kept):
            kept = [k for k in kept if not covers(rule, k)]
            kept.append(rule)
    kept.extend(e for e in exclusions if any(_reaches_into(p, e.parts) for p in kept))
    return sort_rules(kept)


def sort_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Positive rules by path, then exclusions by path.

    Exclusions go last because the real cvmfs_shrinkwrap's parser can hang or drop
    inclusions that follow an exclusion; specs written here work with it too.
    """
    return sorted(rules, key=lambda r: (r.kind is RuleKind.EXCLUDE, r.parts, _KIND_ORDER[r.kind]))


def format_rules(rules: Iterable[Rule]) -> str:
    """Spec text: one canonical rule per line."""
    return "".join(rule.text + "\n" for rule in rules)


def merge_specs(specs: Sequence[Spec]) -> tuple[list[Rule], list[str]]:
    """One minimal rule list selecting at least what each spec selects, and notes about
    exclusions that had to be dropped because another spec selects inside them."""
    notes: list[str] = []
    rules: list[Rule] = []
    for index, spec in enumerate(specs):
        own = minimize(spec.rules)
        others = [
            r
            for j, other in enumerate(specs)
            if j != index
            for r in minimize(other.rules)
            if r.kind is not RuleKind.EXCLUDE
        ]
        for rule in own:
            if rule.kind is RuleKind.EXCLUDE:
                blocker = next((p for p in others if _reaches_into(p, rule.parts)), None)
                if blocker is not None and not _excluded_everywhere(rule, specs):
                    notes.append(
                        f"{rule.location}: exclusion {rule.text!r} dropped: "
                        f"{blocker.text!r} ({blocker.location}) selects inside it"
                    )
                    continue
            rules.append(rule)
    return minimize(rules), notes


def _excluded_everywhere(rule: Rule, specs: Sequence[Spec]) -> bool:
    """Whether every spec that reaches into the excluded path also excludes it."""
    for spec in specs:
        minimal = minimize(spec.rules)
        reaches = any(
            r.kind is not RuleKind.EXCLUDE and _reaches_into(r, rule.parts) for r in minimal
        )
        excluded = any(
            r.kind is RuleKind.EXCLUDE and prefix_covers(r.parts, rule.parts) for r in minimal
        )
        if reaches and not excluded:
            return False
    return True
