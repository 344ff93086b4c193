"""README's Layout names every module of the package (issue 25 item 6), so it cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_paths(readme: str) -> set[str]:
    """Paths named in the README's Layout block: ``pkg/`` headings and the ``*.py`` names below them.

    A line's first column (up to two spaces) holds names; an indented name belongs to the nearest line
    above with less indentation whose first name ends in ``/``.
    """
    block = readme.split("## Layout\n", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    parents: list[tuple[int, str]] = []  # (indent, folder path ending in "/")
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].replace(",", " ").split()
        if not names or not (names[0].endswith("/") or names[0].endswith(".py") or names[0].endswith(".sh")):
            continue  # a continuation of the description above
        while parents and parents[-1][0] >= indent:
            parents.pop()
        prefix = parents[-1][1] if parents and indent else ""
        for name in names:
            named.add(prefix + name)
        if names[0].endswith("/"):
            parents.append((indent, prefix + names[0]))
    return named


def test_layout_parser_reads_nesting():
    readme = "## Layout\n\n```\npkg/   face\n  a.py b.py   two\n  sub/\n    c.py\n  d.py\n                 more text\ntop.py  x\n```\n"
    assert layout_paths(readme) == {"pkg/", "pkg/a.py", "pkg/b.py", "pkg/sub/", "pkg/sub/c.py", "pkg/d.py", "top.py"}


def test_layout_names_every_module():
    named = layout_paths((ROOT / "README.md").read_text())
    modules = sorted(p.relative_to(ROOT).as_posix() for top in ("calib_sweep", "hydra_plugins")
                     for p in (ROOT / top).rglob("*.py"))
    assert len(modules) > 60
    missing = []
    for module in modules:
        folder, name = module.rsplit("/", 1)
        if name == "__init__.py":  # a package is named by its folder (the top package by the whole block)
            if folder != "calib_sweep" and folder + "/" not in named:
                missing.append(folder + "/")
        elif module not in named:
            missing.append(module)
    assert not missing, f"README Layout does not name: {missing}"
    stale = sorted(p for p in named if p.endswith(".py") and not (ROOT / p).exists())
    assert not stale, f"README Layout names modules that do not exist: {stale}"
