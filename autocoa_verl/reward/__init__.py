"""EM / F1 / format scoring (pure) and the verl reward-manager wrapper; one scorer for training and evaluation."""

from autocoa_verl.reward.compute_score import compute_score
from autocoa_verl.reward.scoring import (
    exact_match,
    normalize_answer,
    qa_scores,
    substring_exact_match,
    token_f1,
)

__all__ = ["compute_score", "exact_match", "normalize_answer", "qa_scores", "substring_exact_match", "token_f1"]
