"""Build a retriever index (with its manifest) from a FlashRAG corpus.

Run: python recipes/build_index.py retriever=bm25|dense corpus_path=build/toy/corpus.jsonl [index_dir=...]
"""

import hydra

from autocoa_verl.errors import user_errors
from retriever_server.serve import build_index


@hydra.main(config_path="pkg://hydra_configs", config_name="retriever_server", version_base=None)
@user_errors
def main(cfg) -> None:
    retriever = build_index(cfg.retriever, cfg.corpus_path, cfg.index_dir)
    print(f"{cfg.retriever.name} index of {len(retriever.corpus)} passages in {cfg.index_dir}")


if __name__ == "__main__":
    main()
