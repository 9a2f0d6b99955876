"""Spec files: parse cvmfs_shrinkwrap's spec syntax and decide, per entry, what to export.

Syntax (one rule per line, as cvmfs_shrinkwrap reads it):

========================  =====================================================================
``/a/b/*`` or ``/a/b*``   ``/a/b`` and its whole subtree (a trailing ``*`` is stripped, so
                          ``/a/b*`` means ``/a/b`` deep, not names starting with ``b``)
``/a/b`` (or ``^/a/b``)   the entry alone; a directory is created empty unless other rules
                          name entries below it
``^/a/b/*``               ``/a/b`` and its direct children; child directories are created empty
``!/a/b`` (``!/a/b/*``)   exclude ``/a/b`` and everything below it
``/*``                    the whole repository
``# ...``, blank          ignored (no inline comments)
========================  =====================================================================

Every included path makes its ancestors "pass-through": created, and descended, but only
into the children that rules name. An exclusion wins over every positive rule for its whole
subtree; a positive rule at or below an excluded path has no effect (as in the real parser,
see cvmfs-format.md §11.3), and is reported by :meth:`Spec.warnings`.

Differences from upstream's ``spec_tree.cc``, all of them on purpose:

* Rules are order-independent. Upstream hangs, or drops the inclusion, when a positive line
  follows an exclusion that created its ancestors; here every inclusion makes its ancestors
  pass-through whatever the order. Upstream also lets the last line for a path decide its
  mode (``/a/*`` then ``/a`` exports ``/a`` alone); here the widest rule wins.
* The ancestors of an exclusion do not hide anything: with ``^/a/*`` and ``!/a/b/c`` the
  directory ``/a/b`` is still created (upstream drops it).
* CRLF line endings are accepted; ``.`` and ``..`` components are refused.
* Extension: shell-style globs (``*``, ``?``, ``[...]``) inside a component, e.g.
  ``/lcg/releases/gcc-*/x86_64/*``. A trailing ``*`` keeps upstream's meaning.

:meth:`Spec.select` is called once per catalog entry, so it is built for speed: the rules
are compiled into a trie of literal components (dictionary lookups), glob components are
tried only below nodes that have them, and the state of the most recently used parent
directories is cached, so a call usually costs one dictionary lookup and one step.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from shrinkwrap_async.exitcodes import SpecError
from shrinkwrap_async.text_files import text_lines

__all__ = ["Rule", "RuleKind", "Selection", "Spec", "SpecError", "split_path"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_STATE_CACHE_LIMIT = 4096


class Selection(NamedTuple):
    """What the export does with one entry."""

    include: bool  # create this entry
    descend: bool  # list this directory and call select() on its children


NOTHING = Selection(False, False)
_INCLUDE_ONLY = Selection(True, False)
_INCLUDE_AND_DESCEND = Selection(True, True)


class RuleKind(enum.Enum):
    EXACT = "exact"  # /a/b      the entry (and pass-through ancestors)
    FLAT = "flat"  # ^/a/b/*   the entry and its direct children
    TREE = "tree"  # /a/b/*    the entry and its whole subtree
    EXCLUDE = "exclude"  # !/a/b     the entry and its subtree, never


@dataclass(frozen=True, order=True)
class Rule:
    """One spec line in canonical form. ``parts`` are the path components (``()`` = root)."""

    parts: tuple[str, ...]
    kind: RuleKind = field(compare=False)
    source: str = field(default="<spec>", compare=False)
    line: int = field(default=0, compare=False)

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)

    @property
    def text(self) -> str:
        """The canonical spec line for this rule."""
        path = self.path
        if self.kind is RuleKind.TREE:
            return path.rstrip("/") + "/*"
        if self.kind is RuleKind.FLAT:
            return "^" + path.rstrip("/") + "/*"
        if self.kind is RuleKind.EXCLUDE:
            return "!" + path
        return path

    @property
    def has_glob(self) -> bool:
        return any(_GLOB_CHARS.search(part) for part in self.parts)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    def key(self) -> tuple[tuple[str, ...], str]:
        """Identity of the rule's meaning (path and kind), ignoring where it was written."""
        return (self.parts, self.kind.value)


def split_path(path: str) -> tuple[str, ...]:
    """``"/a/b"`` -> ``("a", "b")``; ``""`` and ``"/"`` -> ``()``."""
    return tuple(part for part in path.split("/") if part)


def parse_rule(raw: str, *, source: str = "<spec>", line: int = 0) -> Rule | None:
    """Parse one spec line; ``None`` for blank lines and comments."""
    text = raw.strip(" \t\r\n")
    if not text or text.startswith("#"):
        return None
    where = f"{source}:{line}"
    prefix = text[0]
    if prefix not in "/!^":
        raise SpecError(f"{where}: a rule must start with '/', '!' or '^': {text!r}")
    body = text[1:] if prefix in "!^" else text
    if not body.startswith("/"):
        raise SpecError(f"{where}: expected an absolute path after {prefix!r}: {text!r}")
    starred = body.endswith("*")
    if starred:
        body = body[:-1]
    parts = split_path(body)
    for part in parts:
        if part in (".", ".."):
            raise SpecError(f"{where}: '.' and '..' are not allowed in a spec path: {text!r}")
    if prefix == "!":
        kind = RuleKind.EXCLUDE
    elif prefix == "^":
        kind = RuleKind.FLAT if starred else RuleKind.EXACT
    else:
        kind = RuleKind.TREE if starred else RuleKind.EXACT
    return Rule(parts, kind, source, line)


def component_covers(pattern: str, name: str) -> bool:
    """Whether the component ``pattern`` (maybe a glob) matches every name ``name`` matches."""
    if pattern == name or pattern == "*":
        return True
    if _GLOB_CHARS.search(name):
        return False
    return _GLOB_CHARS.search(pattern) is not None and fnmatch.fnmatchcase(name, pattern)


def prefix_covers(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Whether ``pattern`` covers the first ``len(pattern)`` components of ``path``."""
    return len(pattern) <= len(path) and all(
        component_covers(p, q) for p, q in zip(pattern, path, strict=False)
    )


class _Node:
    """A trie node: one path component of one or more rules."""

    __slots__ = (
        "dir_warning",
        "exact",
        "exclude",
        "flat",
        "globs",
        "hit",
        "literal",
        "positive_below",
        "rules",
        "tree",
    )

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.globs: list[tuple[Callable[[str], object], str, _Node]] = []
        self.exact = self.flat = self.tree = self.exclude = False
        self.positive_below = False  # a positive rule names something strictly below
        self.rules: list[Rule] = []
        self.hit = False  # some entry reached this node
        self.dir_warning = False  # an exact rule here named a directory

    def child(self, part: str) -> _Node:
        if _GLOB_CHARS.search(part):
            for _match, pattern, node in self.globs:
                if pattern == part:
                    return node
            node = _Node()
            # A name that merely contains glob characters still matches itself.
            matcher = re.compile(f"{re.escape(part)}\\Z|{fnmatch.translate(part)}").match
            self.globs.append((matcher, part, node))
            return node
        node = self.literal.get(part)
        if node is None:
            node = self.literal[part] = _Node()
        return node


class _State(NamedTuple):
    """What is known about a directory after walking the trie down to it."""

    nodes: tuple[_Node, ...]  # trie nodes for this directory (several only with globs)
    recursive: bool  # a TREE rule covers this directory
    flat: bool  # a FLAT rule names this directory: its children are included
    excluded: bool
    included: bool
    descend: bool


class Spec:
    """A compiled spec. Build with :meth:`parse`, :meth:`load`, :meth:`everything`."""

    def __init__(self, rules: Iterable[Rule], *, source: str = "<spec>") -> None:
        self.source = source
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._static_warnings: list[str] = []
        self._shadowed: set[int] = set()
        self._root = _Node()
        self._compile()
        self._cache: dict[str, _State] = {}
        self._root_state = self._make_root_state()
        # The common case of a full export: nothing to look up per entry.
        root = self._root
        self._select_all = (
            root.tree and not root.exclude and not root.globs and not _has_exclusion(root)
        )

    # ----------------------------------------------------------------- construction
    @classmethod
    def parse(cls, text: str, *, source: str = "<spec>") -> Spec:
        """Parse spec text; raises :class:`SpecError` ``"source:line: problem"``."""
        rules = []
        for number, raw in enumerate(text_lines(text), start=1):
            rule = parse_rule(raw, source=source, line=number)
            if rule is not None:
                rules.append(rule)
        return cls(rules, source=source)

    @classmethod
    def load(cls, path: str | Path) -> Spec:
        """Read a spec file; ``"-"`` reads standard input."""
        if str(path) == "-":
            return cls.parse(sys.stdin.read(), source="<stdin>")
        try:
            text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            raise SpecError(f"spec file not found: {path}") from None
        except OSError as error:
            raise SpecError(f"cannot read spec file {path}: {error.strerror}") from None
        return cls.parse(text, source=str(path))

    def require_selection(self) -> Spec:
        """This spec, or a :class:`SpecError` when no line selects anything (an empty file,
        or exclusions alone): an export of nothing is a mistake, not a request."""
        if not any(rule.kind is not RuleKind.EXCLUDE for rule in self.rules):
            raise SpecError(
                f"spec {self.source} selects nothing (no line such as /path/* or /path/file)"
            )
        return self

    @classmethod
    def everything(cls) -> Spec:
        """The whole repository (``/*``)."""
        return cls([Rule((), RuleKind.TREE, "<everything>", 1)], source="<everything>")

    def _compile(self) -> None:
        exclusions = [r for r in self.rules if r.kind is RuleKind.EXCLUDE]
        for index, rule in enumerate(self.rules):
            if rule.kind is not RuleKind.EXCLUDE:
                blocker = next((e for e in exclusions if prefix_covers(e.parts, rule.parts)), None)
                if blocker is not None:
                    self._shadowed.add(index)
                    self._static_warnings.append(
                        f"{rule.location}: {rule.text!r} has no effect: it is inside the "
                        f"exclusion {blocker.text!r} ({blocker.location})"
                    )
                    continue
            node = self._root
            for part in rule.parts:
                if rule.kind is not RuleKind.EXCLUDE:
                    node.positive_below = True
                node = node.child(part)
            node.rules.append(rule)
            if rule.kind is RuleKind.EXACT:
                node.exact = True
            elif rule.kind is RuleKind.FLAT:
                node.flat = True
            elif rule.kind is RuleKind.TREE:
                node.tree = True
            else:
                node.exclude = True

    def _make_root_state(self) -> _State:
        root = self._root
        excluded = root.exclude
        recursive = root.tree
        descend = not excluded and (recursive or root.flat or root.positive_below)
        # The root is always created, even when excluded (then it stays empty).
        return _State((root,), recursive, root.flat, excluded, True, descend)

    # ----------------------------------------------------------------- selection
    def select(self, path: str, *, is_directory: bool) -> Selection:
        """Decide for one entry (``""`` is the root, else ``"/a/b"``)."""
        if path in ("", "/"):
            state = self._root_state
            self._root.hit = True
            return Selection(state.included, state.descend)
        if self._select_all:
            return _INCLUDE_AND_DESCEND if is_directory else _INCLUDE_ONLY
        parent, _, name = path.rpartition("/")
        state = self._cache.get(parent)
        if state is None:
            state = self._state_for(parent)
        if state.excluded or not state.descend:
            return NOTHING
        child = self._step(state, name, is_directory, record=True)
        if not child.included:
            return NOTHING
        return Selection(True, is_directory and child.descend)

    def descends_into(self, directory: str) -> bool:
        """Whether an export lists ``directory`` (``""`` or ``"/a/b"``): it is selected with
        something below it, and so is every directory on the way to it. Records no hit
        (:meth:`warnings` is about what the walk itself met)."""
        if self._select_all:
            return True
        state = self._state_for(directory)
        return not state.excluded and state.descend

    def selects_whole_subtree(self, directory: str) -> bool:
        """Whether every entry below ``directory`` is selected and no rule names anything there.

        Only then may a caller count the subtree from catalog statistics instead of listing
        it without losing a hit that :meth:`warnings` would report.
        """
        if self.is_everything:
            return True
        state = self._state_for(directory)
        if state.excluded or not state.included or not state.recursive:
            return False
        return all(not node.literal and not node.globs for node in state.nodes)

    def _state_for(self, directory: str) -> _State:
        """The state of a directory, walking from the nearest cached ancestor."""
        if directory in ("", "/"):
            return self._root_state
        parent, _, name = directory.rpartition("/")
        state = self._cache.get(parent)
        if state is None:
            state = self._state_for(parent)
        state = self._step(state, name, True, record=False)
        if len(self._cache) >= _STATE_CACHE_LIMIT:
            self._cache.clear()
        self._cache[directory] = state
        return state

    def _step(self, state: _State, name: str, is_directory: bool, *, record: bool) -> _State:
        """The state of ``name`` inside a directory whose state is ``state``."""
        if state.excluded:
            return _EXCLUDED_STATE
        found: list[_Node] = []
        for node in state.nodes:
            hit = node.literal.get(name)
            if hit is not None:
                found.append(hit)
            for match, _pattern, glob_node in node.globs:
                if match(name):
                    found.append(glob_node)
        recursive = state.recursive
        flat = excluded = positive = exact_only = False
        below = False
        for node in found:
            if node.exclude:
                excluded = True
            if node.tree:
                recursive = True
            if node.flat:
                flat = True
            if node.exact or node.positive_below:
                positive = True
            if node.positive_below:
                below = True
            if node.exact and not node.positive_below and not node.flat and not node.tree:
                exact_only = True
        if excluded:
            if record:
                for node in found:
                    node.hit = True
            return _EXCLUDED_STATE
        included = recursive or flat or positive or state.flat
        descend = included and (recursive or flat or below)
        if record:
            for node in found:
                node.hit = True
            if is_directory and exact_only and not recursive and not flat and not below:
                for node in found:
                    if node.exact:
                        node.dir_warning = True
        return _State(tuple(found), recursive, flat, False, included, descend)

    # ----------------------------------------------------------------- reporting
    def warnings(self) -> list[str]:
        """Lines with no effect, lines that matched no entry seen by :meth:`select`, and
        directories named without ``/*`` (cvmfs/cvmfs#3495, #3497)."""
        messages = list(self._static_warnings)
        for node, rule in self._walk_rules():
            if not node.hit:
                messages.append(f"{rule.location}: {rule.text!r} matched nothing")
            elif node.dir_warning and rule.kind is RuleKind.EXACT:
                messages.append(
                    f"{rule.location}: {rule.text!r} names a directory; only the directory "
                    f"itself is exported (write '{rule.path.rstrip('/')}/*' for its contents)"
                )
        return messages

    def _walk_rules(self) -> Iterable[tuple[_Node, Rule]]:
        pending = [self._root]
        found: list[tuple[_Node, Rule]] = []
        while pending:
            node = pending.pop()
            found.extend((node, rule) for rule in node.rules)
            pending.extend(node.literal.values())
            pending.extend(glob_node for _m, _p, glob_node in node.globs)
        found.sort(key=lambda item: (item[1].source, item[1].line))
        return found

    def digest(self) -> str:
        """A stable hash of the rules' meaning (order, comments and spelling ignored)."""
        lines = sorted({rule.text for rule in self.rules})
        return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()

    def to_text(self) -> str:
        """The rules as spec text, one per line (as written, canonical spelling)."""
        return "".join(rule.text + "\n" for rule in self.rules)

    @property
    def is_everything(self) -> bool:
        return self._select_all

    def __repr__(self) -> str:
        return f"Spec({self.source!r}, {len(self.rules)} rules)"


_EXCLUDED_STATE = _State((), False, False, True, False, False)


def _has_exclusion(node: _Node) -> bool:
    pending = [node]
    while pending:
        current = pending.pop()
        if current.exclude:
            return True
        pending.extend(current.literal.values())
        pending.extend(glob_node for _m, _p, glob_node in current.globs)
    return False
