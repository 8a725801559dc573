"""A FlashRAG/Search-R1-compatible retrieval service, deployable without verl.

``Retriever`` backends (bm25, dense, flashrag) -> ``create_app(retriever)`` (FastAPI) -> Ray Serve or uvicorn.
Build an index: ``python recipes/build_index.py retriever=bm25 corpus_path=... index_dir=...``;
serve it: ``python recipes/serve_retriever.py retriever=bm25 ...`` (README, "Retriever").
"""
