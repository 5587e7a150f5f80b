"""labhop: Jupyter on a remote GPU machine, in the local browser, with one command."""

from __future__ import annotations

__version__ = "0.1.0"
