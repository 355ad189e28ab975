"""The layer order of the package, read from the imports themselves (ast, not the import
system): every `import` and `from ... import` statement in samplernn_pase/**.py, relative or
absolute, at the top of a file or inside a function, names a module of its own floor or of
a lower one.

    errors/files -> audio -> models -> data -> metrics -> experiment -> training -> runners
    -> report -> cli

Top-level modules: `__init__.py` (the version), `errors.py` and `files.py` are the ground
floor; `cli.py`, `__main__.py` (which runs the CLI) and `api.py` (the Python API) the top
one, which the root imports lazily (`samplernn_pase.load`).
"""

import ast
from pathlib import Path

PACKAGE = "samplernn_pase"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

FLOORS = [
    {"__init__", "errors", "files"},
    {"audio"},
    {"models"},
    {"data"},
    {"metrics"},
    {"experiment"},
    {"training"},
    {"runners"},
    {"report"},
    {"cli", "__main__", "api"},
]
#: The one import allowed to go up: the package root's `__getattr__` imports the Python API
#: when `samplernn_pase.load` is first asked for (nothing imports it when the root loads).
LAZY = {(PACKAGE, f"{PACKAGE}.api")}
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def module_name(path: Path, root: Path) -> str:
    """samplernn_pase/models/pase.py -> "samplernn_pase.models.pase"; an __init__.py names its package."""
    parts = (PACKAGE,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path) -> bool:
    relative = Path(*name.split(".")[1:])
    return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()


def imported_modules(path: Path, root: Path) -> list[tuple[str, int]]:
    """(module of the package, line) of every import in the file, wherever it stands."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:   # `from pkg import submodule` imports the submodule
                submodule = f"{source}.{alias.name}"
                found.append((submodule if is_module(submodule, root) else source, node.lineno))
    return [(module, line) for module, line in sorted(found, key=lambda item: item[1])
            if module == PACKAGE or module.startswith(PACKAGE + ".")]


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOOR["__init__" if len(parts) == 1 else parts[1]]


def crossings(root: Path = ROOT) -> list[str]:
    """"importer:line -> imported (floor a < floor b)" for every import that goes up a floor."""
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        for module, line in imported_modules(path, root):
            if floor(module) > floor(importer) and (importer, module) not in LAZY:
                found.append(f"{path.relative_to(root.parent)}:{line} -> {module} "
                             f"(floor {floor(importer)} imports floor {floor(module)})")
    return found


def test_every_package_file_has_a_floor():
    for path in ROOT.rglob("*.py"):
        importer = module_name(path, ROOT)
        top = path.stem if importer == PACKAGE or path.parent == ROOT else importer.split(".")[1]
        assert top in FLOOR, f"{path}: no floor for {top!r} in the layer order"


def test_the_reader_sees_relative_absolute_and_function_level_imports(tmp_path):
    """The reader itself, on a package written here with each kind of import going up."""
    root = tmp_path / PACKAGE
    for folder in ("audio", "models", "runners"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("")
    (root / "cli.py").write_text("")
    (root / "audio" / "a.py").write_text("from ..models import m\n")              # relative, up
    (root / "models" / "m.py").write_text(
        "import samplernn_pase.runners.r\n"                                        # absolute, up
        "def f():\n    from ..runners.r import g\n"                                # in a function, up
        "from .. import errors\nfrom . import n\nimport numpy\n")                  # down, same, outside
    (root / "models" / "n.py").write_text("")
    (root / "runners" / "r.py").write_text("from .. import cli\nfrom ..models.m import f\n")
    assert crossings(root) == [
        "samplernn_pase/audio/a.py:1 -> samplernn_pase.models.m (floor 1 imports floor 2)",
        "samplernn_pase/models/m.py:1 -> samplernn_pase.runners.r (floor 2 imports floor 7)",
        "samplernn_pase/models/m.py:3 -> samplernn_pase.runners.r (floor 2 imports floor 7)",
        "samplernn_pase/runners/r.py:1 -> samplernn_pase.cli (floor 7 imports floor 9)",
    ]


def test_no_import_goes_up_a_floor():
    found = crossings()
    assert not found, "imports against the layer order:\n" + "\n".join(found)
