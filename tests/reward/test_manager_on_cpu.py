import numpy as np
import torch
from verl import DataProto
from verl.trainer.ppo.reward import load_reward_manager

from autocoa_verl.config import compose
from autocoa_verl.reward.manager import CoARewardManager

def _rollout(tokenizer, prompt: str, response: str, golds: list[str], pad_to: int = 96) -> DataProto:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert len(response_ids) < pad_to
    padded = response_ids + [tokenizer.pad_token_id] * (pad_to - len(response_ids))
    attention = [1] * len(prompt_ids) + [1] * len(response_ids) + [0] * (pad_to - len(response_ids))
    return DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([prompt_ids]),
            "responses": torch.tensor([padded]),
            "attention_mask": torch.tensor([attention]),
        },
        non_tensors={
            "data_source": np.array(["toy_world"], dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": {"target": golds}}], dtype=object),
            "extra_info": np.array([{"index": 0}], dtype=object),
        },
    )


def test_reward_manager_loads_through_verl_importlib_source_and_scores(tiny_tokenizer):
    config = compose("rl_stage2", ["reward.custom_reward_function.reward_kwargs.metric=f1"])
    manager = load_reward_manager(config, tiny_tokenizer)
    assert isinstance(manager, CoARewardManager)

    response = (
        "<think>need it</think><search>Arlo Venn birthplace</search>"
        "<information>Doc 1: <answer>Quessly</answer></information><answer>Mira Oltan of Quessly</answer>"
    )
    result = manager.loop.run_until_complete(manager.run_single(_rollout(tiny_tokenizer, "Q: where?", response, ["Mira Oltan"])))
    # F1 by hand: pred [mira, oltan, of, quessly] vs gold [mira, oltan] -> P 1/2, R 1 -> 2/3
    assert abs(result["reward_score"] - 2 / 3) < 1e-9
    info = result["reward_extra_info"]
    assert (info["em"], info["format_ok"], info["num_searches"]) == (0.0, 1.0, 1.0)

    # padding after the response is ignored; an answer only inside an observation never counts
    leaked = "<search>q</search><information><answer>Mira Oltan</answer></information>"
    result = manager.loop.run_until_complete(manager.run_single(_rollout(tiny_tokenizer, "Q", leaked, ["Mira Oltan"])))
    assert result["reward_score"] == 0.0
    assert result["reward_extra_info"]["answered"] == 0.0
