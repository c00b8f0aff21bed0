"""The daemon's HTTP server: uvicorn, stopping the app's worker first when SIGTERM or Ctrl-C ends it."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI


class Server(uvicorn.Server):
    """uvicorn's server for an app of ``create_app``: on exit its worker stops before uvicorn shuts down."""

    def __init__(self, app: FastAPI, host: str, port: int):
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.served = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop the worker (waiting clients hear at once; the episode stays checkpointed), then uvicorn."""
        self.served.state.services.worker.stop()
        super().handle_exit(sig, frame)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` on ``host``:``port`` until SIGTERM or Ctrl-C; SIGTERM exits 0."""
    # uvicorn re-raises the signal it caught once it has shut down; a no-op handler here makes SIGTERM exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    Server(app, host, port).run()
