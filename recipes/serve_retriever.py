"""Serve a built index over HTTP (Ray Serve by default, or server.mode=uvicorn); Ctrl-C stops it.

Run: python recipes/serve_retriever.py retriever=bm25 server.port=8000 [server.replicas=2] [server.ray_address=auto]
With server.ray_address set and server.detach=true it deploys the application into that cluster (or reuses the one
running under server.app_name) and exits; the application stays up until `serve.delete` or the cluster goes.
"""

import hydra

from autocoa_verl.errors import user_errors
from retriever_server.serve import serve_ray, serve_uvicorn


@hydra.main(config_path="pkg://hydra_configs", config_name="retriever_server", version_base=None)
@user_errors
def main(cfg) -> None:
    if cfg.server.detach and cfg.server.ray_address is None:
        raise ValueError("server.detach=true needs server.ray_address (a cluster to leave the application in)")
    if cfg.server.mode == "ray":
        serve_ray(cfg, block=not cfg.server.detach)
    elif cfg.server.mode == "uvicorn":
        serve_uvicorn(cfg)
    else:
        raise ValueError(f"server.mode must be ray or uvicorn, got {cfg.server.mode!r}")


if __name__ == "__main__":
    main()
