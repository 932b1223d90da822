#!/usr/bin/env python3
"""Lists this crate's module dependencies per source file and fails on a cycle.

An edge A -> B is any `crate::` or `super::` path in file A (outside `#[cfg(test)] mod tests`)
that resolves to an item of file B; paths inside inline modules (`mod x86 { ... }`) are
resolved from that module. Run from anywhere: `python3 tools/module_cycles.py`.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("lib", "mod"):
        parts.pop()
    return tuple(parts)


files = {module_of(p): p for p in SRC.rglob("*.rs")}


def file_of(path):
    """The module (one per file) that defines `path`: its longest prefix that is a file."""
    for n in range(len(path), -1, -1):
        if path[:n] in files:
            return path[:n]


PATH = re.compile(r"\b(crate|super)((?:::\w+)*)(::\{)?")
edges = {m: set() for m in files}
for mod, path in files.items():
    stack = []  # inline modules open at this point: (name, brace depth at opening)
    depth = 0
    skip_from = None
    for line in path.read_text().splitlines():
        code = line.split("//")[0]
        m = re.match(r"\s*(?:pub(?:\(\w+\))?\s+)?mod (\w+)\s*\{", code)
        if m:
            if m.group(1) == "tests":
                skip_from = depth
            stack.append((m.group(1), depth))
        if skip_from is None:
            here = mod + tuple(n for n, _ in stack)
            found = []
            for m in PATH.finditer(code):
                root, rest, brace = m.groups()
                if not rest and not brace:
                    continue  # `pub(crate)`, or the word in a string
                names = [n for n in rest.split("::") if n]
                base = () if root == "crate" else here
                if root == "super":
                    base = base[:-1]
                while names and names[0] == "super":
                    base, names = base[:-1], names[1:]
                group = code[m.end():].split("}")[0]
                if brace and "}" in code[m.end():]:
                    # `prefix::{a, b::c}` on one line: each member is a path of its own.
                    found += [base + tuple(names) + (g.strip().split("::")[0],)
                              for g in group.split(",") if g.strip()]
                else:
                    found.append(base + tuple(names))
            # Paths relative to this module: `child::item`.
            for rel in re.findall(r"(?<![:\w])(\w+(?:::\w+)+)", code):
                parts = tuple(rel.split("::"))
                if here + parts[:1] in files:
                    found.append(here + parts)
            for path_ in found:
                target = file_of(path_)
                if target is not None and target != mod:
                    edges[mod].add(target)
        depth += code.count("{") - code.count("}")
        while stack and depth <= stack[-1][1]:
            name, _ = stack.pop()
            if name == "tests":
                skip_from = None

name = lambda m: "::".join(m) or "crate"
for m in sorted(edges, key=name):
    print(f"{name(m):16} -> {', '.join(sorted(map(name, edges[m]))) or '-'}")

# Depth-first search for a cycle.
state, cycle = {}, []


def visit(m, trail):
    state[m] = "open"
    for t in sorted(edges[m]):
        if state.get(t) == "open":
            cycle.extend(trail[trail.index(t):] + [m, t] if t in trail else [m, t])
            return True
        if t not in state and visit(t, trail + [m]):
            return True
    state[m] = "done"
    return False


if any(m not in state and visit(m, []) for m in sorted(edges, key=name)):
    print("cycle:", " -> ".join(map(name, cycle)))
    sys.exit(1)
print("no cycles")
