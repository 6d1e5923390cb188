"""The ``xrayd`` command line: one module per command group."""

from xrayd.cli.main import main

__all__ = ["main"]
