"""autocoa_verl: train agent models (AutoCoA) on verl — a reasoning LLM that decides inside its chain of thought
when to search and what to search for."""

__version__ = "0.1.0"
