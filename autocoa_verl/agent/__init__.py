"""The verl agent loop that pauses at the action tag, and the observation providers (retriever client, ...)."""
