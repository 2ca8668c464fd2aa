"""Every tool's usage line is the command that runs it (``python -m tools.<name>``), not the file name."""
import importlib

import pytest

TOOLS = ['export', 'extract_features', 'finetune_size', 'flops', 'predict', 'publish', 'report', 'visualize']


@pytest.mark.parametrize('name', TOOLS)
def test_usage_line_names_the_module_command(name, capsys):
    tool = importlib.import_module(f'tools.{name}')
    with pytest.raises(SystemExit) as info:
        tool.main(['--help'])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f'usage: python -m tools.{name} ')
