"""A FlashRAG/Search-R1-compatible retrieval service, deployable without verl.

``Retriever`` backends (bm25, dense, flashrag) -> ``create_app(retriever)`` (FastAPI) -> Ray Serve or uvicorn.
Build an index: ``python -m retriever_server.index retriever=bm25 corpus_path=... index_dir=...``;
serve it: ``python -m retriever_server.serve retriever=bm25 ...`` (README, "Retriever").
"""
