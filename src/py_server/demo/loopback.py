"""Serve an ASGI app on a loopback port from a background thread.

Used by `--demo` (the demo 1C base and repairs API), by the tests and by `bench/`.

    server = LoopbackServer(app).start()
    httpx.get(server.url + "/health")
    server.stop()

The listening socket is bound and listening before `start()` returns, so clients may connect at
once: the kernel queues them until uvicorn accepts. `stop()` then `start()` again reuses the same
port, which is how tests take a backend down and bring it back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

LOOPBACK = "127.0.0.1"


class LoopbackServer:
    def __init__(
        self, app: Any, *, port: int = 0, graceful_shutdown: float = 2.0, options: dict[str, Any] | None = None
    ) -> None:
        self.app = app
        self.port = port
        self._graceful_shutdown = graceful_shutdown
        self._options = {**(options or {}), "timeout_graceful_shutdown": graceful_shutdown}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> LoopbackServer:
        if self._thread is not None:
            raise RuntimeError("LoopbackServer is already running")
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only then (else ~40 ms per reply).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="auto",
            **self._options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, sock), name=f"loopback-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        finally:
            sock.close()

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=self._graceful_shutdown + 5)
        self._server = None
        self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
