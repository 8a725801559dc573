"""Evaluate models and baselines on QA datasets (autocoa_verl/eval/): direct, CoT, RAG, ReAct and the agent model.

Run: python recipes/evaluate.py models.agent=MODEL_DIR datasets.toy=build/toy/test.jsonl retriever_url=http://... \
       [+models.rl=RL_DIR limit=50 samples=3 methods=[rag,agent] out_dir=build/eval]  (see hydra_configs/eval.yaml)
Re-running with the same out_dir resumes; the report covers every record in it.
"""

import hydra
from omegaconf import DictConfig

from autocoa_verl.errors import user_errors


@hydra.main(config_path="pkg://hydra_configs", config_name="eval", version_base=None)
@user_errors
def main(cfg: DictConfig) -> None:
    from autocoa_verl.eval.harness import markdown_report, run_evaluation

    summary = run_evaluation(cfg)
    print("\n" + markdown_report(summary))
    print(f"records, summary.json, report.md and plots/: {cfg.out_dir}")


if __name__ == "__main__":
    main()
