"""A long-lived lighteval process that runs one evaluation per job; executed by the eval environment.

Usage: python lighteval_worker.py   (jobs on stdin, one JSON object per line)

Importing lighteval costs about 17 s on the CI machine, more than evaluating a tiny model; a lane
evaluates eight checkpoints and tops some up, so it keeps one worker and sends it jobs. A job is
``{"args": [lighteval CLI arguments], "env": {name: value}, "done": "path"}``: the worker sets the
environment, runs lighteval's own command line in-process (custom tasks only, as ``lighteval_run.py``:
lighteval's own reasoning tasks come in through ``fixtures/lane/builtin_tasks.py``, which imports only
their three modules, none of which fetches anything at import) and writes
``{"ok": true, "seconds": s}`` or ``{"ok": false, "error": ...}`` to ``done`` atomically.
A job that crashes the interpreter leaves no ``done`` file; the caller sees the process gone.

The server's API key comes with each job's environment (``OPENAI_API_KEY``, with the server's address
in ``QUANTGATE_SERVER``), and this worker adds it as a bearer token to every request of the process
to that server (``send_api_key``). Why here and not in the lighteval model
(``fixtures/lane/lighteval_model.py``): that file's hash is part of the stored BF16 references'
provenance (``task_sha256``), so editing it would invalidate every stored reference for a header that
changes no answer.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lighteval_run import custom_tasks_only_registry


def write_done(path: str, payload: dict[str, object]) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
    os.replace(temporary, path)


def send_api_key() -> None:
    """Make every plain-HTTP request of this process to ``$QUANTGATE_SERVER`` carry ``$OPENAI_API_KEY``.

    Installed on urllib's HTTP handler class before lighteval loads the model (whose opener is built
    at import); requests to any other address are left as they are, so the key goes nowhere else.
    """
    prepare = urllib.request.HTTPHandler.http_request

    def http_request(self, request):  # type: ignore[no-untyped-def]
        key, server = os.environ.get("OPENAI_API_KEY"), os.environ.get("QUANTGATE_SERVER")
        if key and server and request.full_url.startswith(server.rstrip("/") + "/"):
            request.add_unredirected_header("Authorization", f"Bearer {key}")
        return prepare(self, request)

    urllib.request.HTTPHandler.http_request = http_request


def main() -> None:
    send_api_key()
    custom_tasks_only_registry()
    import typer
    from lighteval.__main__ import app

    command = typer.main.get_command(app)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        os.environ.update({str(k): str(v) for k, v in job.get("env", {}).items()})
        started = time.monotonic()
        try:
            command.main(args=list(job["args"]), prog_name="lighteval", standalone_mode=False)
        except BaseException as exc:
            tail = "".join(traceback.format_exception(exc)[-6:])
            print(tail, file=sys.stderr, flush=True)
            write_done(job["done"], {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": tail})
            if isinstance(exc, KeyboardInterrupt):
                raise
            continue
        write_done(job["done"], {"ok": True, "seconds": round(time.monotonic() - started, 3)})


if __name__ == "__main__":
    main()
