"""Dataset preparation: the embedded toy world, FlashRAG QA files -> verl parquet."""
