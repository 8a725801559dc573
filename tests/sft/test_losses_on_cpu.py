"""Stage 1's contrastive loss, derived by hand on tiny tensors."""

import math

import pytest
import torch

from autocoa_verl.sft.losses import contrastive_loss, mean_logprob, pair_loss


def test_pair_loss_by_hand():
    # P_chosen = -0.5, P_rejected = -2.0: -log sigmoid(1.5) + 0.2 * 0.5
    expected = -math.log(1 / (1 + math.exp(-1.5))) + 0.2 * 0.5
    assert pair_loss(torch.tensor(-0.5), torch.tensor(-2.0), alpha=0.2).item() == pytest.approx(expected)
    # alpha = 0 is the pure preference term; a preferred rejected branch costs more than a preferred chosen one
    right, wrong = torch.tensor(-0.5), torch.tensor(-2.0)
    assert pair_loss(wrong, right, 0.0) > pair_loss(right, wrong, 0.0)


def test_mean_logprob_reads_the_log_prob_of_the_next_token():
    # tokens: [p, p, c, c]; log_probs[t] scores token t + 1, so the continuation tokens 2 and 3 are scored at 1 and 2
    log_probs = torch.tensor([-9.0, -1.0, -3.0, -7.0])
    mask = torch.tensor([0, 0, 1, 1])
    assert mean_logprob(log_probs, mask).item() == pytest.approx(-2.0)


def _nested(rows):
    return torch.nested.as_nested_tensor([torch.tensor(r) for r in rows], layout=torch.jagged)


def test_contrastive_loss_on_a_micro_batch_of_two_pairs():
    log_probs = _nested([[-5.0, -1.0, -1.0, -4.0], [-5.0, -2.0, -4.0], [-3.0, -0.5, -8.0], [-3.0, -1.5, -8.0]])
    mask = _nested([[0, 0, 1, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0]])
    # P: chosen0 = mean(-1, -1) = -1; rejected0 = -2; chosen1 = -3 (only token 1, scored at 0); rejected1 = -3
    expected_pairs = [pair_loss(torch.tensor(-1.0), torch.tensor(-2.0), 0.2),
                      pair_loss(torch.tensor(-3.0), torch.tensor(-3.0), 0.2)]
    data = {"loss_mask": mask, "dp_size": 2, "global_batch_size": 8}  # 8 pairs in the global batch, 2 ranks
    loss, metrics = contrastive_loss(None, {"log_probs": log_probs}, data, alpha=0.2)
    assert loss.item() == pytest.approx(sum(p.item() for p in expected_pairs) * 2 / 8)
    assert metrics["pair_accuracy"] == 0.5 and metrics["margin"] == pytest.approx(0.5)


def test_contrastive_loss_refuses_a_split_pair():
    data = {"loss_mask": _nested([[0, 1], [0, 1], [0, 1]]), "dp_size": 1, "global_batch_size": 2}
    with pytest.raises(ValueError, match="splits a"):
        contrastive_loss(None, {"log_probs": _nested([[-1.0, -1.0]] * 3)}, data)


def test_gradient_flows_to_both_branches():
    chosen = torch.tensor(-1.0, requires_grad=True)
    rejected = torch.tensor(-1.0, requires_grad=True)
    pair_loss(chosen, rejected, 0.2).backward()
    assert chosen.grad.item() == pytest.approx(-0.5 - 0.2) and rejected.grad.item() == pytest.approx(0.5)
