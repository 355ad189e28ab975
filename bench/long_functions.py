"""Functions longer than a screen (default 60 lines) in a package: `python bench/long_functions.py
[PACKAGE_DIR] [--over N]`. Lines counted from the `def` to the last line of the body, docstring
and comments included (what a reader has to hold)."""

import argparse
import ast
from pathlib import Path


def long_functions(root: Path, over: int):
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > over:
                    found.append((length, f"{path}:{node.lineno}", node.name))
    return sorted(found, reverse=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1] / "samplernn_pase"))
    parser.add_argument("--over", type=int, default=60)
    args = parser.parse_args()
    found = long_functions(Path(args.root), args.over)
    for length, where, name in found:
        print(f"{length:4d}  {name}  {where}")
    print(f"{len(found)} functions over {args.over} lines")


if __name__ == "__main__":
    main()
