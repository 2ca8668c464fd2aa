"""The layout rules of the repository: utils/ is a leaf, the documented checkpoint table is the schema's, README
carries CI's set-up and test commands, and the documentation's relative links point to files and headings
that exist."""
import ast
import glob
import os
import re

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


def _markdown_files():
    """README, INSTALL, DATA and every page under docs/: the user documentation."""
    top = [os.path.join(REPO, name) for name in ('README.md', 'INSTALL.md', 'DATA.md')]
    return [p for p in top if os.path.exists(p)] + sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))


def _read(path):
    return open(path, encoding='utf-8').read()


def test_documented_checkpoint_table_is_the_schema():
    # the table "What a checkpoint contains" is generated from engine/checkpoint/schema.py; the page that
    # documents checkpoints must carry it exactly (regenerate it with markdown_table() when the schema changes)
    holders = [os.path.relpath(p, REPO) for p in _markdown_files() if markdown_table() in _read(p)]
    assert holders, 'no documentation page carries engine.checkpoint.schema.markdown_table()'
    assert '`rng_per_rank`' in markdown_table()


def test_readme_carries_the_ci_setup_and_test_commands():
    # .ci/run installs and tests with exactly the commands a newcomer reads in README
    ci = _read(os.path.join(REPO, '.ci', 'run'))
    readme = _read(os.path.join(REPO, 'README.md'))
    assert 'python -m pip install -r requirements.txt' in ci and 'pip install -r requirements.txt' in readme
    assert re.search(r'^python -m pytest -q$', ci, re.M)
    assert re.search(r'^python -m pytest -q\s*(#.*)?$', readme, re.M), 'README lacks the test command line'


def _slug(heading):
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'`|\*\*|\[|\]\([^)]*\)', '', heading.strip()).lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def _anchors(path):
    seen, anchors, in_code = {}, set(), False
    for line in _read(path).splitlines():
        if line.startswith('```'):
            in_code = not in_code
        elif not in_code and re.match(r'#{1,6} ', line):
            slug = _slug(line.lstrip('#'))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f'{slug}-{n}')
    return anchors


def test_relative_links_in_the_documentation_resolve():
    # every relative link of README / INSTALL / DATA / docs/*.md names an existing file, and an #anchor names a
    # heading of that file; external (http) links are not fetched
    broken = []
    for path in _markdown_files():
        text = re.sub(r'```.*?```', '', _read(path), flags=re.S)
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+:', target):
                continue
            file_part, _, anchor = target.partition('#')
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            where = f'{os.path.relpath(path, REPO)}: {target}'
            if not os.path.exists(resolved):
                broken.append(f'{where} (no such file)')
            elif anchor and resolved.endswith('.md') and anchor not in _anchors(resolved):
                broken.append(f'{where} (no such heading)')
    assert broken == []


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
