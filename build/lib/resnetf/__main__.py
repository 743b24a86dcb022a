"""python -m resnetf SUBCOMMAND ...: the same as the `resnetf` command."""

from .cli import command

command()
