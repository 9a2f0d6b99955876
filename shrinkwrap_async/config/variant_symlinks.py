"""Variant symlinks: ``$(NAME)`` and ``$(NAME:-default)`` in symlink targets.

Expanded exactly as the client does when it reads a catalog entry: ``$(`` starts a
reference only when at least one character follows it; the name runs to the first ``:-`` or
``)``; a variable that is set (even to the empty string) is substituted, else the default
(empty without ``:-``). Without a closing ``)`` the ``$(`` and the character after it are
kept literally and scanning goes on after that character. ``@fqrn@`` is not expanded here.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand_variant_symlink(target: str, env: Mapping[str, str]) -> str:
    if "$" not in target:
        return target
    length = len(target)
    out: list[str] = []
    i = 0
    while i < length:
        char = target[i]
        if char == "$" and i < length - 2 and target[i + 1] == "(":
            start = i + 2
            close = target.find(")", start)
            if close < 0:
                out.append("$(" + target[start])
                i = start + 1
                continue
            separator = target.find(":-", start, close + 1)
            if separator < 0 or separator >= close:
                name, default = target[start:close], ""
            else:
                name, default = target[start:separator], target[separator + 2 : close]
            value = env.get(name)
            out.append(default if value is None else value)
            i = close + 1
            continue
        out.append(char)
        i += 1
    return "".join(out)
