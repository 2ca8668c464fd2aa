"""The layout rules of the repository: utils/ is a leaf, README's checkpoint table is the schema's."""
import ast
import glob
import os

from engine.checkpoint.schema import KEYS, make_checkpoint, markdown_table

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imported_packages(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split('.')[0]


def test_utils_imports_nothing_from_engine_models_or_datasets():
    offenders = {}
    for path in glob.glob(os.path.join(REPO, 'utils', '*.py')):
        bad = sorted(set(_imported_packages(path)) & {'engine', 'models', 'datasets', 'tools', 'benchmarks'})
        if bad:
            offenders[os.path.relpath(path, REPO)] = bad
    assert offenders == {}


def test_readme_checkpoint_table_is_the_schema():
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    assert markdown_table() in readme
    assert '`rng_per_rank`' in markdown_table()


def test_make_checkpoint_refuses_missing_and_unknown_entries():
    entries = {k: None for k in KEYS}
    assert list(make_checkpoint(**entries)) == list(KEYS)
    with pytest.raises(ValueError, match='missing'):
        make_checkpoint(**{k: None for k in KEYS[1:]})
    with pytest.raises(ValueError, match='unknown'):
        make_checkpoint(**entries, amp=None)


def test_tools_and_benchmarks_do_not_edit_sys_path():
    for path in glob.glob(os.path.join(REPO, 'tools', '*.py')) + glob.glob(os.path.join(REPO, 'benchmarks', '*.py')):
        source = open(path).read()
        assert 'sys.path.insert' not in source and 'sys.path.append' not in source, path


def _engine_imports(path):
    """``(line, enclosing function or None)`` of every import of ``engine`` in ``path``."""
    tree = ast.parse(open(path).read(), path)
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            if any(name.split('.')[0] == 'engine' for name in names):
                found.append((child.lineno, function))
            visit(child, function)

    visit(tree, None)
    return found


def test_models_and_datasets_do_not_import_engine():
    """models/ and datasets/ sit below engine/: their errors and checkpoint reading come from utils/. The one
    exception is a command-line entry point (a ``main`` function run with ``python -m``), which may use the
    run's config loader; a library function never does."""
    offenders = {}
    for pattern in ('models/*.py', 'models/**/*.py', 'datasets/*.py', 'datasets/**/*.py'):
        for path in glob.glob(os.path.join(REPO, pattern), recursive=True):
            bad = [line for line, function in _engine_imports(path) if function != 'main']
            if bad:
                offenders[os.path.relpath(path, REPO)] = bad
    assert offenders == {}


def test_config_error_is_one_class_everywhere():
    from engine.config import ConfigError as from_engine
    from utils.errors import ConfigError
    import models.build
    assert from_engine is ConfigError and issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError):
        raise models.build._config_error('x')
