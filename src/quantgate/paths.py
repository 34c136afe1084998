"""Where quantgate's data lives: one root, and every data folder as a path below it.

The data (rules, catalog, kind files, recipes, published figures, stored references) is kept in the
repository's folders, where people edit and review it. A wheel carries a copy of those folders inside
the package (``quantgate/_data/``, written by ``setup.py``'s build step), so an installed ``quantgate``
finds them without a checkout. The root is, in order: ``$QUANTGATE_ROOT``; the checkout this package
runs from (an editable install or ``src`` on the path); the copy inside the package. It is looked up on
each call, so a test or a job can point it elsewhere through the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from quantgate.errors import QuantgateError

ROOT_VARIABLE: Final = "QUANTGATE_ROOT"
PACKAGE_DIR: Final = Path(__file__).resolve().parent
CHECKOUT_DIR: Final = PACKAGE_DIR.parents[1]
SHIPPED_DIR: Final = PACKAGE_DIR / "_data"

# The folders a wheel carries, relative to the root; the same relative paths in a checkout.
SHIPPED_FOLDERS: Final[tuple[str, ...]] = (
    "baselines",
    "suites/catalog",
    "suites/kinds",
    "fixtures/data/recipes",
)
RULES_FILE: Final = Path("baselines") / "rules.yaml"


def _has_data(root: Path) -> bool:
    return (root / RULES_FILE).is_file()


def root() -> Path:
    """The folder holding ``baselines/``, ``suites/`` and ``fixtures/``; see the module docstring."""
    configured = os.environ.get(ROOT_VARIABLE)
    if configured:
        path = Path(configured).expanduser().resolve()
        if not _has_data(path):
            raise QuantgateError(
                f"${ROOT_VARIABLE}={configured}",
                f"no {RULES_FILE} there: point it at a quantgate checkout or unset it",
            )
        return path
    for candidate in (CHECKOUT_DIR, SHIPPED_DIR):
        if _has_data(candidate):
            return candidate
    raise QuantgateError(
        str(PACKAGE_DIR),
        f"quantgate's data is missing: neither {CHECKOUT_DIR} nor {SHIPPED_DIR} holds {RULES_FILE}; "
        f"set ${ROOT_VARIABLE} to a checkout",
    )


def baselines_dir() -> Path:
    """Stored references (``baselines/<kind>/<model>/<benchmark>.json``), rules and published figures."""
    return root() / "baselines"


def rules_file() -> Path:
    return root() / RULES_FILE


def published_dir() -> Path:
    """The model cards' published figures that ``quantgate replay`` judges by default."""
    return root() / "baselines" / "published"


def catalog_dir() -> Path:
    return root() / "suites" / "catalog"


def kinds_dir() -> Path:
    return root() / "suites" / "kinds"


def kind_file(name: str) -> Path:
    """A device kind's file by name (``cpu``, ``gpu``)."""
    return kinds_dir() / f"{name}.yaml"


def recipes_dir() -> Path:
    """llmcompressor recipes, one per scheme."""
    return root() / "fixtures" / "data" / "recipes"
