"""A stand-in for `vllm serve` in the LocalServer tests: `python fake_engine.py serve MODEL --port N ...`.

FAKE_ENGINE_MODE picks the behaviour: `serve` (answers /health on the port), `die` (prints and exits 3),
`hang` (never answers), `stubborn` (answers /health, ignores SIGTERM and starts a child in its group that
ignores it too, so only SIGKILL ends them), `freeze` (answers /health until it gets SIGUSR1, then hangs in
every request, as an engine stuck in a collective would). Each start-up line goes to stdout, as vLLM's
log would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FROZEN = threading.Event()


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if FROZEN.is_set():
            time.sleep(3600)
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    mode = os.environ.get("FAKE_ENGINE_MODE", "serve")
    print(f"fake engine: {' '.join(args[:2])} on port {port}", flush=True)
    print("loading weights\r50%\r100%", flush=True)
    if mode == "die":
        print("RuntimeError: the fake engine failed to load the model", flush=True)
        sys.exit(3)
    if mode == "hang":
        while True:
            time.sleep(1)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
        ]
        subprocess.Popen(child)
    if mode == "freeze":
        signal.signal(signal.SIGUSR1, lambda *_: FROZEN.set())
    print("Application startup complete.", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Health).serve_forever()


if __name__ == "__main__":
    main()
