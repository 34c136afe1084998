"""Replay suite: one test per cell found under ``--qg-results DIR``, judged against rules and references."""

from __future__ import annotations

import pytest

from plugins.replay import judge_cell


def test_cell(qg_cell, request: pytest.FixtureRequest, record_property) -> None:  # type: ignore[no-untyped-def]
    judge_cell(qg_cell, request.config, record_property)
