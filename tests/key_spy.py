"""Records each vLLM server's API key for ``tests/test_server_key.py`` (loaded with ``-p key_spy``).

The key is drawn inside the lane's pytest process, so the test that greps the lane's output for it
cannot know it otherwise. Each started server's key is appended to the file named by
``QG_KEY_SPY_FILE``, which lies outside the folders the lane writes. Nothing else changes.
"""

from __future__ import annotations

import os
from typing import Any


def pytest_configure(config: Any) -> None:
    from quantgate.runners import serve

    real_start = serve.VllmServer.start

    def start(self: Any) -> Any:
        started = real_start(self)
        with open(os.environ["QG_KEY_SPY_FILE"], "a", encoding="utf-8") as handle:
            handle.write(f"{self.api_key}\n")
        return started

    serve.VllmServer.start = start  # type: ignore[method-assign]
