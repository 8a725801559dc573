"""Open a retriever from its config and serve it: Ray Serve (replicas, in a new or an existing Ray cluster) or
plain uvicorn. Entry points: ``recipes/build_index.py`` and ``recipes/serve_retriever.py`` (Hydra).
:func:`serve_bm25` serves a bm25 index on loopback in a thread, for tests, benchmarks and data preparation."""

from __future__ import annotations

import signal
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf


def retriever_class(retriever_cfg: DictConfig | dict) -> Any:
    """The backend class named by the config's ``_target_`` (Hydra's own resolver, no registry of ours)."""
    from hydra.utils import get_class

    return get_class(retriever_cfg["_target_"])


def _options(retriever_cfg: DictConfig | dict) -> dict[str, Any]:
    options = retriever_cfg.get("options") or {}
    return OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options)


def build_index(retriever_cfg, corpus_path: str | Path, index_dir: str | Path, progress: bool = True):
    """Builds the configured backend's index (with manifest) and returns the retriever."""
    cls = retriever_class(retriever_cfg)
    if not hasattr(cls, "build"):
        raise ValueError(f"the {retriever_cfg.get('name')} backend builds its index with its own tools")
    return cls.build(corpus_path=corpus_path, index_dir=index_dir, progress=progress, **_options(retriever_cfg))


def open_retriever(retriever_cfg, corpus_path: str | Path, index_dir: str | Path):
    """Opens the configured backend on a built index (the manifest is checked against corpus and options)."""
    return retriever_class(retriever_cfg).open(corpus_path=corpus_path, index_dir=index_dir,
                                               **_options(retriever_cfg))


def app_kwargs(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg.app, resolve=True)


def serve_uvicorn(cfg: DictConfig) -> None:
    """One process, one replica; dynamic batching still merges concurrent requests."""
    import uvicorn

    from retriever_server.app import create_app

    retriever = open_retriever(cfg.retriever, cfg.corpus_path, cfg.index_dir)
    uvicorn.run(create_app(retriever, **app_kwargs(cfg)), host=cfg.server.host, port=cfg.server.port,
                log_level="warning")


def ray_deployment(cfg: DictConfig):
    """A Ray Serve application: ``server.replicas`` replicas, each opening the index and serving the FastAPI app."""
    from ray import serve

    @serve.deployment(name="retriever", num_replicas=cfg.server.replicas,
                      ray_actor_options={"num_cpus": cfg.server.num_cpus_per_replica},
                      max_ongoing_requests=cfg.server.max_ongoing_requests)
    @serve.ingress()
    class RetrieverDeployment:
        def __init__(self, retriever_cfg: dict, corpus_path: str, index_dir: str, kwargs: dict):
            self.retriever = open_retriever(retriever_cfg, corpus_path, index_dir)
            self.kwargs = kwargs

        def __serve_build_asgi_app__(self):
            from retriever_server.app import create_app

            return create_app(self.retriever, **self.kwargs)

    return RetrieverDeployment.bind(OmegaConf.to_container(cfg.retriever, resolve=True),
                                    str(Path(cfg.corpus_path).resolve()), str(Path(cfg.index_dir).resolve()),
                                    app_kwargs(cfg))


def serve_ray(cfg: DictConfig, block: bool = True) -> str:
    """Starts (or joins, with ``server.ray_address``) Ray, deploys the retriever, returns its URL; blocks until
    SIGINT/SIGTERM when ``block``, then shuts the application down."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=cfg.server.ray_address, ignore_reinit_error=True, include_dashboard=False,
                 **({"num_cpus": cfg.server.ray_num_cpus} if cfg.server.ray_address is None else {}))
    serve.start(http_options={"host": cfg.server.host, "port": cfg.server.port})
    url = f"http://{cfg.server.host}:{cfg.server.port}{cfg.server.route_prefix.rstrip('/')}"
    running = serve.status().applications.get(cfg.server.app_name)
    if running is not None and running.status == "RUNNING" and cfg.server.ray_address is not None:
        # another job (or an earlier launch) deployed it into this cluster: share it
        print(f"retriever: reusing the running Serve application {cfg.server.app_name!r} at {url}", flush=True)
        return url
    serve.run(ray_deployment(cfg), name=cfg.server.app_name, route_prefix=cfg.server.route_prefix, blocking=False)
    print(f"retriever ({cfg.retriever.name}) serving at {url}/retrieve with {cfg.server.replicas} replica(s)",
          flush=True)
    if block:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        serve.delete(cfg.server.app_name)
        if cfg.server.ray_address is None:
            serve.shutdown()
            ray.shutdown()
    return url


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a daemon thread; ``stop()`` and ``start()`` again on the same
    port."""

    def __init__(self, app, port: int | None = None):
        self.app, self.port = app, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = self._thread = None

    def start(self, timeout_s: float = 20.0) -> "ServerThread":
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + timeout_s
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not start within {timeout_s} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)


@contextmanager
def serve_bm25(corpus: str | Path, index_dir: str | Path) -> Iterator[str]:
    """A bm25 retriever over ``corpus`` served on loopback for the ``with`` block; yields its URL. The index in
    ``index_dir`` is reused, or built when missing or built from another corpus."""
    from retriever_server.app import create_app
    from retriever_server.bm25 import BM25Retriever

    server = ServerThread(create_app(BM25Retriever.open_or_build(corpus, index_dir))).start()
    try:
        yield server.url
    finally:
        server.stop()
