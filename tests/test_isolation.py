"""Tests never reach beyond loopback, and the hub is off: shown, not assumed."""

from __future__ import annotations

import os
import socket

import pytest

from quantgate.runners.process import free_port


def test_a_connection_beyond_loopback_is_refused_before_any_packet() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError, match=r"stay on loopback; refused a connection to \('8\.8\.8\.8'"),
    ):
        sock.connect(("8.8.8.8", 53))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError, match=r"huggingface\.co"),
    ):
        sock.connect(("huggingface.co", 443))


def test_loopback_still_works() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen(1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect(("127.0.0.1", port))


def test_the_hub_is_off() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
