"""The layer picture of docs/DESIGN.md, checked against the imports.

Each package may import from its own layer and the layers below it, never above; imports of
the project's own modules sit at module top, so the dependency order is visible in the first
lines of every file. The NTIRE entry files (models/team01_*.py) import torch only. Library
messages speak of the thing, not of a command-line flag: the scripts own their flags.
"""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# lowest first; a module may import its own layer and any layer listed before it
LAYERS = ['utils.io', 'models', 'utils.data', 'utils.metrics', 'utils.engine', 'utils.compress', 'scripts']
SCRIPTS = {'train', 'prune', 'reparam', 'test_demo'}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def layer_of(module: str) -> str | None:
    if module in SCRIPTS:
        return 'scripts'
    for layer in LAYERS:
        if module == layer or module.startswith(layer + '.'):
            return layer
    return None


def project_imports(path: pathlib.Path, source: str | None = None):
    """(imported module, line, inside a function) for every import of models/utils in `path`
    (or in `source`, read as if it were that file)."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ''
                if child.level:   # relative: resolved against the importing module's package
                    package = module_name(path).split('.')
                    package = package[:len(package) - child.level + (path.name == '__init__.py')]
                    base = '.'.join(package + ([base] if base else []))
                # `from utils import x` names the subpackage; deeper, the package decides the layer
                names = [f'{base}.{alias.name}' if base == 'utils' else base for alias in child.names]
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
                continue
            for name in names:
                if name.split('.')[0] in ('models', 'utils'):
                    found.append((name, child.lineno, in_function))
    visit(tree, False)
    return found


def source_files():
    files = sorted(ROOT.glob('models/*.py')) + sorted(ROOT.glob('utils/**/*.py'))
    return files + [ROOT / f'{name}.py' for name in sorted(SCRIPTS)]


def test_every_module_belongs_to_a_layer():
    for path in source_files():
        name = module_name(path)
        assert name == 'utils' or layer_of(name), f'{name} is in no layer of docs/DESIGN.md'


@pytest.mark.parametrize('path', source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_downward_and_sit_at_module_top(path):
    own = LAYERS.index(layer_of(module_name(path)) or 'utils.io')
    for name, line, in_function in project_imports(path):
        target = layer_of(name)
        assert target is not None, f'{path.name}:{line} imports {name}, which is in no layer'
        assert LAYERS.index(target) <= own, (f'{path.relative_to(ROOT)}:{line} imports {name} '
                                             f'({target}) from the lower layer {LAYERS[own]}')
        assert not in_function, f'{path.relative_to(ROOT)}:{line}: import of {name} inside a function'


def test_the_check_catches_an_upward_import():
    fake = ROOT / 'utils' / 'io' / 'upward.py'
    source = ('from utils.engine.training import Trainer\nfrom . import atomic\n\n'
              'def f():\n    from models import load_model\n')
    imports = project_imports(fake, source)
    assert ('utils.io', 2, False) in imports
    assert ('utils.engine.training', 1, False) in imports and ('models', 5, True) in imports
    assert LAYERS.index(layer_of('utils.engine.training')) > LAYERS.index(layer_of(module_name(fake)))


def test_entry_files_import_torch_only():
    for path in sorted(ROOT.glob('models/team01_*.py')):
        tree = ast.parse(path.read_text())
        modules = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}
        modules |= {node.module.split('.')[0] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
        assert modules <= {'torch', 'math', 'collections'}, (path.name, modules)


FLAG = re.compile(r'(?<![\w-])--[a-z]')


def flags_in_messages(source: str) -> list:
    """(line, text) of every string in a `raise` or a `warnings.warn(...)` that names a
    command-line flag (--name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        call = node.value if isinstance(node, ast.Expr) else None
        is_warn = (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                   and call.func.attr == 'warn')
        if isinstance(node, ast.Raise) or is_warn:
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str) and FLAG.search(part.value):
                    found.append((part.lineno, part.value))
    return found


@pytest.mark.parametrize('path', [p for p in source_files() if layer_of(module_name(p)) != 'scripts'
                                  and not p.name.startswith('team01_')],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_library_messages_name_no_flags(path):
    source = path.read_text()
    if re.search(r'^def main\(', source, re.M):
        return  # a `python -m` tool: its messages name its own flags
    assert not flags_in_messages(source), f'{path.relative_to(ROOT)}: {flags_in_messages(source)}'


def test_the_flag_check_catches_a_flag():
    source = ("import warnings\n"
              "def f(x):\n"
              "    if x:\n"
              "        raise ValueError(f'bad --ratio {x}')\n"
              "    warnings.warn('pass --model NAME')\n"
              "    raise ValueError('a ratio-less message, e.g. x--y or --')\n")
    assert sorted(line for line, _ in flags_in_messages(source)) == [4, 5]
