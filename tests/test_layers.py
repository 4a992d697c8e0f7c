"""Imports point one way: the library under the command layer, the kernels under the renderer.

Read from the source with ``ast`` (nothing is imported), so a forbidden import anywhere in a
module, at the top or inside a function, fails the test.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'spherehead'
# The command layer: spherehead/tools/ and the `spherehead` entry point that registers its commands.
COMMAND_LAYER = ('tools/', 'cli.py', '__main__.py')


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """Absolute names of every module that ``path`` (a file under the package folder ``root``)
    imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    package = [root.name, *path.relative_to(root).parent.parts]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f'{module}.{alias.name}' for alias in node.names)   # `from spherehead import tools`
    return names


def library_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob('*.py'))
            if not p.relative_to(PACKAGE).as_posix().startswith(COMMAND_LAYER)]


def offenders(paths, prefixes, root: Path = PACKAGE) -> list[str]:
    """'file: module' for each import of a module named by one of ``prefixes`` (or inside one)."""
    found = []
    for path in paths:
        for name in sorted(imported_modules(path, root)):
            if any(name == p or name.startswith(p + '.') for p in prefixes):
                found.append(f'{path.relative_to(root.parent).as_posix()}: {name}')
    return found


def test_finds_the_forbidden_imports_it_looks_for(tmp_path):
    """The checker itself: each way of writing the import is caught, and a look-alike name is not."""
    fake = tmp_path / 'spherehead' / 'data'
    fake.mkdir(parents=True)
    cases = {'a.py': 'import click\n', 'b.py': 'def f():\n    from spherehead.tools import cli_common\n',
             'c.py': 'from ..tools.media import X\n', 'd.py': 'from spherehead import tools\n',
             'e.py': 'import clickhouse\nfrom spherehead.toolshed import x\n'}
    for name, text in cases.items():
        (fake / name).write_text(text)
    found = offenders(sorted(fake.glob('*.py')), ('click', 'spherehead.tools'), tmp_path / 'spherehead')
    assert sorted({f.split(':')[0] for f in found}) == [f'spherehead/data/{c}.py' for c in 'abcd']


def test_library_has_no_command_line_code():
    """Click and spherehead.tools belong to the command layer; the library (data, metrics, train,
    networks, ...) never imports them."""
    modules = library_modules()
    assert len(modules) > 50 and PACKAGE / 'data' / 'dataset.py' in modules
    assert not any(p.is_relative_to(PACKAGE / 'tools') for p in modules)
    assert offenders(modules, ('click', 'spherehead.tools')) == []


def test_kernels_do_not_import_the_renderer():
    """The renderer calls ops; a kernel's PyTorch reference sits beside it in ops, so no module
    of spherehead/ops/ imports spherehead.render."""
    modules = sorted((PACKAGE / 'ops').rglob('*.py'))
    assert PACKAGE / 'ops' / 'dual_sphere.py' in modules
    assert offenders(modules, ('spherehead.render',)) == []
