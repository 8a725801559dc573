"""Real servers on loopback for tests."""

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A real uvicorn server on loopback in a thread; ``stop()`` and ``start()`` again on the same port."""

    def __init__(self, app, port: int | None = None):
        self.app, self.port = app, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = self._thread = None

    def start(self) -> "ServerThread":
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 20
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)


@contextmanager
def serve_bm25(corpus: Path, index_dir: Path) -> Iterator[str]:
    """A bm25 retriever over ``corpus`` served on loopback for the ``with`` block; yields its URL. The index in
    ``index_dir`` is reused, or built when missing or built from another corpus."""
    from retriever_server.app import create_app
    from retriever_server.bm25 import BM25Retriever

    retriever = BM25Retriever.open_or_build(corpus, index_dir)
    server = ServerThread(create_app(retriever)).start()
    try:
        yield server.url
    finally:
        server.stop()
