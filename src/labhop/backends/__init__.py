"""Where a server runs: one abstract `Backend` (`base`), one module per place.

Importing any module of this package registers every backend (`base.BACKENDS`), so the
scripts that read every backend's state entries know them all.
"""

from __future__ import annotations

from labhop.backends import host, slurm  # noqa: F401 -- each registers its kind
