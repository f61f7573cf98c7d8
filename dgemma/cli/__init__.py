"""The `dgemma` command line (`dgemma.cli.main`); importing it loads no torch."""

from dgemma.cli.main import main

__all__ = ["main"]
