"""Command line: parse, call one operation, render. Nothing else lives here."""

from swarmctl.cli import commands
from swarmctl.cli.app import cli, main, run

__all__ = ["cli", "commands", "main", "run"]
