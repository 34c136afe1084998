"""The rate probe: a server that does not answer in time gives upper bounds, said as such.

The real server's rates are probed in every lane run (``suites/test_matrix.py``); here a listening
socket that never answers stands in for a server too slow to finish one request in the timeout.
"""

from __future__ import annotations

import socket

from quantgate.runners.probe import measure_rate


def test_a_server_that_does_not_answer_in_time_gives_upper_bounds() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        rate = measure_rate(f"http://127.0.0.1:{port}", "m", "<s>1+1=", streams=64, timeout=0.5)
    assert rate.bounded
    assert rate.single_tps == 8.0  # the 4-token warm-up request timed out
    assert rate.batch_tps == 64 * 8.0
    assert rate.detail.startswith("at most 8.0 tokens/s alone")
