"""Draw primia's layers from the code, for docs/architecture.md (``make layers``).

The layers are the ones ``.importlinter`` enforces; beside each package stand the packages
below it that it really imports (read from every module's import statements). The picture
goes between the two marker lines of docs/architecture.md; ``--check`` writes nothing and
exits 1 when the page's picture is stale (the test suite runs it).
"""

from __future__ import annotations

import argparse
import ast
import configparser
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"
BEGIN = "<!-- layers: drawn by tools/layers.py from the code; do not edit -->"
END = "<!-- end of layers -->"


def layers() -> list[list[str]]:
    """The layers contract of ``.importlinter``, top first: package names per layer."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    lines = config["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [[name.strip().removeprefix("primia.") for name in line.split("|")] for line in lines]


def imports_by_package() -> dict[str, set[str]]:
    """Top-level primia package (or module) -> the other ones its modules import."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted((ROOT / "primia").rglob("*.py")):
        parts = path.relative_to(ROOT / "primia").with_suffix("").parts
        if "generated" in parts or parts == ("__init__",) or parts == ("__main__",):
            continue
        source = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "primia":
                names = [f"primia.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "primia" and len(pieces) > 1 and pieces[1] != source:
                    target = ROOT / "primia" / pieces[1]
                    if target.is_dir() or target.with_suffix(".py").exists():
                        edges[source].add(pieces[1])
    return edges


def picture() -> str:
    edges = imports_by_package()
    rows = layers()
    width = max(len(name) for row in rows for name in row)
    lines = ["```", "layer  package" + " " * (width - 7) + "  imports (all from layers below)"]
    for number, row in enumerate(rows, start=1):
        for position, name in enumerate(row):
            label = f"{number:>5}" if position == 0 else "    |"
            below = ", ".join(sorted(edges.get(name, ())))
            lines.append(f"{label}  {name:<{width}}  {below}".rstrip())
    lines.append("```")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args()
    page = PAGE.read_text()
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{BEGIN}\n{picture()}\n{END}{tail}"
    if args.check:
        if updated != page:
            print(f"{PAGE.relative_to(ROOT)}: the layers picture is stale; run `make layers`")
            return 1
        return 0
    PAGE.write_text(updated)
    print(f"drew the layers into {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
