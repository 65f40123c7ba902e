"""ML subcommands of ``pneumo``: stats, train, evaluate, predict."""
from __future__ import annotations

import argparse


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register the ML subcommands on the ``pneumo`` parser."""
    return None
