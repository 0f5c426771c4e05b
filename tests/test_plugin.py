"""A block from another installed package joins the registry through its entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dwsearch import get_block, list_blocks, register_block
from dwsearch.registry import UnknownBlockError

PLUGIN = '''
import torch
from torch import nn
from dwsearch import register_block


@register_block("ghost_test")
class GhostTest(nn.Module):
    """A test block shipped by another package."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.conv(x)


class ByClass(nn.Module):
    """Registered under its entry-point name."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.scale
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install a real package declaring ``dwsearch.blocks`` entry points with pip."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "dws_test_plugin").mkdir()
    (src / "dws_test_plugin" / "__init__.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "dws-test-plugin"
        version = "0.0.1"
        [project.entry-points."dwsearch.blocks"]
        ghost = "dws_test_plugin"
        scale_test = "dws_test_plugin:ByClass"
    '''))
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(src)],
        check=True, capture_output=True,
    )
    return site


def _python(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": ""})


def test_installed_plugin_blocks_are_discovered(plugin_site: Path) -> None:
    proc = _python(plugin_site, "from dwsearch import list_blocks; print(list_blocks('*test*'))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['ghost_test', 'scale_test']"


def test_plugin_block_builds_in_a_spec_and_shows_in_the_cli(plugin_site: Path) -> None:
    code = (
        "from dwsearch import build_model\n"
        "m = build_model({'input': [3, 4, 4], 'num_classes': 2, 'layers': ["
        "{'block': 'ghost_test', 'out_channels': 5}, {'block': 'scale_test'},"
        "{'block': 'global_avgpool'}, {'block': 'linear', 'out_features': 2}]})\n"
        "print(m[0].conv.in_channels, m[1].scale.shape)\n"
        "from dwsearch.cli import main\n"
        "main(['blocks', 'ghost*'])\n"
    )
    proc = _python(plugin_site, code)
    assert "3 torch.Size([1])" in proc.stdout, proc.stderr
    assert "ghost_test  A test block shipped by another package.  [dws_test_plugin]" in proc.stdout


def test_plugins_absent_from_this_process() -> None:
    assert "ghost_test" not in list_blocks()


def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="already taken"):
        register_block("conv")(type("Again", (), {}))


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UnknownBlockError, match="did you mean dwsep"):
        get_block("dwsepp")


def test_wildcards() -> None:
    assert list_blocks("*pool") == ["avgpool", "global_avgpool", "maxpool"]
    assert list_blocks("nothing*") == []
