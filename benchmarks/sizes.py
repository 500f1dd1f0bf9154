"""The package's shape as a signal: each module's lines and its longest function, largest
first, those past the design's reading sizes (~450 lines a module, ~60 a function) marked.

    python benchmarks/sizes.py
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cnnlab"
MODULE_LINES, FUNCTION_LINES = 450, 60


def main() -> None:
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        functions = [
            (node.end_lineno - node.lineno + 1, node.name)
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        longest = max(functions, default=(0, "-"))
        rows.append((len(text.splitlines()), path.relative_to(PACKAGE).as_posix(), longest))
    print(f"{'module':<24} {'lines':>6}  longest function")
    for lines, name, (length, function) in sorted(rows, reverse=True):
        mark = " *" if lines > MODULE_LINES or length > FUNCTION_LINES else ""
        print(f"{name:<24} {lines:>6}  {function} ({length}){mark}")
    total = sum(row[0] for row in rows)
    print(f"{total} lines in {len(rows)} modules; * past ~{MODULE_LINES} or ~{FUNCTION_LINES}")


if __name__ == "__main__":
    main()
