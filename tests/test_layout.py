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
