"""Real servers on loopback for tests: the library's own helpers (retriever_server.serve)."""

from retriever_server.serve import ServerThread, free_port, serve_bm25

__all__ = ["ServerThread", "free_port", "serve_bm25"]
