"""The command line: the same handlers as the Function App, from a terminal or a pipeline.

``airlock`` (the installed entry point) and ``python -m shared`` both call ``main``.
"""
from .dispatch import main

__all__ = ["main"]
