"""The repository's own packages, loaded under `streamsim._project` instead of their own names.

The processes are written as top-level packages (`common`, `producer`, `logger`, ...), names
generic enough that a notebook's folder or environment may hold modules of the same name: a
user's `logger.py`, or PyPI's `logger`. Installed as they are, one would hide the other. So the
installation puts only `streamsim` on the path, and this finder loads the repository's
packages from the source tree as `streamsim._project.common`, ... with their absolute imports
(`from common import schema`) rewritten to those names when compiled. A user's `common` and
ours are then two different modules, each working, whichever is imported first. The
processes themselves (`python -m producer`) run as before: nothing here touches them.

The rewritten code is cached beside the usual bytecode, under its own tag
(`schema.cpython-311.opt-streamsim.pyc`), so the ordinary `.pyc` files are never mixed up
with it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import marshal
import os
import struct
import sys
import types
from pathlib import Path
from types import ModuleType

PREFIX = "streamsim._project"
# The repository's top-level packages, found rather than listed so that a new one is never
# left out (clients/ holds the test client, a script, and no __init__.py).
PACKAGES = tuple(
    sorted(
        folder.name
        for folder in Path(__file__).resolve().parent.parent.iterdir()
        if (folder / "__init__.py").is_file() and folder.name != "streamsim"
    )
) + ("clients",)
_TAG = "streamsim"
_FORMAT = 1  # of the cached code: bump when the rewriting changes
_STAMP = struct.Struct("<qqI")  # source mtime (ns), source size, _FORMAT


def repository() -> Path:
    """The clone `streamsim` runs from: the folder holding it and the processes' packages."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "common" / "schema.py").is_file():
        msg = (
            f"streamsim needs the repository it comes from, and {root} is not it: "
            "install it from a clone with pip install -e <clone>"
        )
        raise ImportError(msg)
    return root


def project(name: str) -> ModuleType:
    """The repository's module `name` (`common.schema`), loaded under `streamsim._project`."""
    install()
    return importlib.import_module(f"{PREFIX}.{name}")


def install() -> None:
    """Put the finder first on `sys.meta_path` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(repository()))


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `streamsim._project.<package>...` in the repository, and nothing else."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == PREFIX:
            return _namespace(fullname, [])
        if not fullname.startswith(PREFIX + "."):
            return None
        parts = fullname[len(PREFIX) + 1 :].split(".")
        if parts[0] not in PACKAGES:
            return None
        base = self.root.joinpath(*parts)
        if base.is_dir():
            init = base / "__init__.py"
            if not init.is_file():
                return _namespace(fullname, [str(base)])
            return importlib.util.spec_from_file_location(
                fullname,
                init,
                loader=_Loader(fullname, str(init)),
                submodule_search_locations=[str(base)],
            )
        source = base.with_suffix(".py")
        if source.is_file():
            return importlib.util.spec_from_file_location(
                fullname, source, loader=_Loader(fullname, str(source))
            )
        return None


def _namespace(name: str, locations: list[str]) -> importlib.machinery.ModuleSpec:
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = locations
    return spec


class _Loader(importlib.machinery.SourceFileLoader):
    """Compiles a module with its imports of the repository's packages renamed."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        stat = os.stat(path)
        stamp = importlib.util.MAGIC_NUMBER + _STAMP.pack(stat.st_mtime_ns, stat.st_size, _FORMAT)
        cache = importlib.util.cache_from_source(path, optimization=_TAG)
        try:
            with open(cache, "rb") as file:
                cached = file.read()
            if cached.startswith(stamp):
                return marshal.loads(cached[len(stamp) :])
        except (OSError, ValueError, EOFError, TypeError):
            pass
        tree = _Rewrite().visit(ast.parse(source, path))
        code = compile(ast.fix_missing_locations(tree), path, "exec", dont_inherit=True)
        if not sys.dont_write_bytecode:
            _store(cache, stamp + marshal.dumps(code))
        return code


def _store(path: str, data: bytes) -> None:
    """Write the cache atomically; a folder we may not write to only costs the next import."""
    partial = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(partial, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except OSError:
        try:
            os.unlink(partial)
        except OSError:
            pass


def _ours(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in PACKAGES


class _Rewrite(ast.NodeTransformer):
    """`from common import schema` -> `from streamsim._project.common import schema`;
    `import common.schema as s` likewise; `import common.schema` binds `common` as before."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        if node.level == 0 and _ours(node.module):
            node.module = f"{PREFIX}.{node.module}"
        return node

    def visit_Import(self, node: ast.Import) -> list[ast.stmt]:
        statements: list[ast.stmt] = []
        kept: list[ast.alias] = []
        for alias in node.names:
            if not _ours(alias.name):
                kept.append(alias)
                continue
            full = f"{PREFIX}.{alias.name}"
            if alias.asname is not None:
                statements.append(ast.Import(names=[ast.alias(full, alias.asname)]))
                continue
            top = alias.name.split(".")[0]
            if "." in alias.name:  # load the submodule, then bind the top package's name
                statements.append(ast.Import(names=[ast.alias(full, f"_streamsim_{top}")]))
            statements.append(ast.ImportFrom(module=PREFIX, names=[ast.alias(top, None)], level=0))
        if kept:
            statements.insert(0, ast.Import(names=kept))
        return [ast.copy_location(s, node) for s in statements]
