#!/usr/bin/env python3
"""Lists import circles between the modules of each crate of the workspace.

A module is a file or folder directly under a crate's `src/` (`src/server/...` is one module,
`server`). An edge A -> B is any `crate::B` path written in A outside comments and outside
`#[cfg(test)]` modules. Prints each circle (a strongly connected component of more than one
module) and exits 1 if there is one; `--graph` prints every edge.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["proto", "datasets", "ledger", "gateway", "audit", "trainer", "cli", "bench", "testkit"]


def strip(text):
    """Source without comments and without the `#[cfg(test)] mod tests { ... }` block."""
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    if m:
        text = text[: m.start()]
    return text


def modules(src):
    """Top-level module name -> list of its files."""
    out = {}
    for entry in os.listdir(src):
        path = os.path.join(src, entry)
        if entry.endswith(".rs"):
            name = entry[:-3]
            if name in ("lib", "main"):
                continue
            out.setdefault(name, []).append(path)
        elif os.path.isdir(path):
            for d, _, files in os.walk(path):
                out.setdefault(entry, []).extend(os.path.join(d, f) for f in files if f.endswith(".rs"))
    return out


def edges(mods):
    graph = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            text = strip(open(f, encoding="utf-8").read())
            names = set(re.findall(r"crate::(\w+)", text))
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    show = "--graph" in sys.argv
    bad = 0
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        graph = edges(modules(src))
        if show:
            for m in sorted(graph):
                print(f"{crate}: {m} -> {', '.join(sorted(graph[m])) or '-'}")
        for comp in sccs(graph):
            bad += 1
            print(f"{crate}: import circle among {', '.join(comp)}")
    if bad == 0:
        print("no import circle in any crate")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
