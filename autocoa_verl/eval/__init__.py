"""Evaluation: the agent model (the CoA loop in standalone mode, exactly the rollout code) and its scores."""
