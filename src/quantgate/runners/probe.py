"""How fast a served model generates right now: a few short requests before a cell's work is sized.

Why: on one CPU kind the FP8 kernel ran 2x to 50x slower than BF16 depending on the host, so a cell
sized by a fixed count of items, samples and bench repeats took minutes on one host and an hour on
another. A probe of a few seconds gives the rates that ``quantgate.budget`` sizes the cell's work with.

Every request goes to the server's ``/v1/completions`` with ``ignore_eos`` (vLLM's extension), so its
length is known: one sequence alone (the single-stream rate), then ``streams`` sequences of one
request (``n``), about the load an evaluation puts on the server. A request that outlives ``timeout``
ends the probe: the rates are then at most what the timeout allows, and the probe says so. Requests
carry the server's API key (``VllmServer.api_key``) as a bearer token.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from quantgate.runners.process import NO_PROXY, ToolError, bearer


@dataclass(frozen=True)
class Rate:
    """Generated tokens per second, alone and with ``streams`` sequences in flight.

    ``bounded`` is true when a request timed out: the figures are then upper bounds.
    """

    single_tps: float
    batch_tps: float
    streams: int
    seconds: float
    bounded: bool = False

    @property
    def detail(self) -> str:
        bound = "at most " if self.bounded else ""
        return (
            f"{bound}{self.single_tps:.1f} tokens/s alone, {bound}{self.batch_tps:.1f} tokens/s with "
            f"{self.streams} sequences (probe {self.seconds:.1f} s)"
        )


def _generate(
    base_url: str, served_name: str, prompt: str, n: int, max_tokens: int, timeout: float, api_key: str | None
) -> tuple[int, float] | None:
    """Generated tokens and seconds of one request; ``None`` when it outlived ``timeout``."""
    body = {
        "model": served_name,
        "prompt": prompt,
        "n": n,
        "max_tokens": max_tokens,
        "temperature": 0.6,
        "seed": 0,
        "ignore_eos": True,
    }
    request = urllib.request.Request(
        base_url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **bearer(api_key)},
        method="POST",
    )
    started = time.monotonic()
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except TimeoutError:
        return None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return None
        raise ToolError("rate probe", f"request to {base_url} failed: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise ToolError("rate probe", f"request to {base_url} failed: {exc}") from None
    seconds = time.monotonic() - started
    try:
        tokens = int(answer["usage"]["completion_tokens"])
    except (KeyError, TypeError, ValueError):
        raise ToolError("rate probe", f"{base_url} answered without usage.completion_tokens") from None
    return tokens, seconds


def measure_rate(
    base_url: str,
    served_name: str,
    prompt: str,
    *,
    streams: int,
    max_tokens: int = 32,
    timeout: float = 30.0,
    api_key: str | None = None,
) -> Rate:
    """The server's generation rates now (see the module docstring).

    Two short requests go first and are not measured, one alone and one with ``streams`` sequences:
    a fresh server sets up its kernels for each new batch shape on first use.
    """
    started = time.monotonic()

    def bounded(single_tps: float, batch_tps: float) -> Rate:
        return Rate(single_tps, batch_tps, streams, time.monotonic() - started, bounded=True)

    if _generate(base_url, served_name, prompt, 1, 4, timeout, api_key) is None:
        return bounded(4 / timeout, streams * 4 / timeout)
    if _generate(base_url, served_name, prompt, streams, 4, timeout, api_key) is None:
        return bounded(4 / timeout, streams * 4 / timeout)
    single = _generate(base_url, served_name, prompt, 1, max_tokens, timeout, api_key)
    if single is None:
        return bounded(max_tokens / timeout, streams * max_tokens / timeout)
    single_tps = single[0] / max(single[1], 1e-6)
    batch = _generate(base_url, served_name, prompt, streams, max_tokens // 2, timeout, api_key)
    if batch is None:
        return bounded(single_tps, streams * (max_tokens // 2) / timeout)
    return Rate(single_tps, batch[0] / max(batch[1], 1e-6), streams, time.monotonic() - started)
