"""The wheel carries quantgate's data folders (``quantgate.paths.SHIPPED_FOLDERS``) in ``quantgate/_data``.

The data is edited in the repository's own folders (``baselines/``, ``suites/``, ``fixtures/``), which
package data cannot reach; this build step copies them into the built package. An editable install
reads them in place, so nothing is copied there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_FOLDERS = ("baselines", "suites/catalog", "suites/kinds", "fixtures/data/recipes")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = Path(__file__).resolve().parent
        shipped = Path(self.build_lib) / "quantgate" / "_data"
        for folder in SHIPPED_FOLDERS:
            shutil.copytree(here / folder, shipped / folder, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithData})
