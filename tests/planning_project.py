"""A pytester project with quantgate's planning plugins over the full catalog, for plugin tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugins import PLANNING_PLUGINS

REPO = Path(__file__).resolve().parents[1]


def planning_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, suite: str
) -> pytest.Pytester:
    """``pytester`` with the planning plugins, the real catalog, and ``suite`` as ``test_suite.py``."""
    monkeypatch.delenv("QUANTGATE_CATALOG", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeconftest(f"pytest_plugins = {list(PLANNING_PLUGINS)!r}\n")
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider -p no:randomly -p no:hypothesispytest\n")
    pytester.makepyfile(test_suite=suite)
    return pytester
