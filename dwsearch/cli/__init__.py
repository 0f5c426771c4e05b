"""The ``dwsearch`` command line: thin wrappers that parse, call the Python API and print.

One module per command group; none imports torch before a command runs, so ``dwsearch
--help`` and ``dwsearch blocks`` answer at once. Errors a user can cause print one line
(see :class:`dwsearch.cli._common.DwsearchGroup` for the exit statuses).
"""

from __future__ import annotations

import click

from dwsearch.cli import bench, compress, models, report, study, training
from dwsearch.cli._common import DwsearchGroup

__all__ = ["main"]


@click.group(cls=DwsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dwsearch")
def main() -> None:
    """Architecture search and ablation of convolution blocks.

    Build networks from layer specs, count their exact costs, train them on CIFAR-10 and
    search over blocks with Optuna.
    """


for _module in (models, training, compress, study, report, bench):
    for _command in _module.COMMANDS:
        main.add_command(_command)
