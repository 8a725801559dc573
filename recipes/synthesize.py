"""Teacher trajectories for SFT (autocoa_verl/data/synthesis.py) with the CoA loop on a local vLLM engine.

Run: python recipes/synthesize.py teacher=MODEL_DIR questions=train.jsonl out_dir=DIR retriever_url=http://... \
       [coa_target=5000 cot_target=1000 samples_per_question=2 ...]     (see hydra_configs/synthesis.yaml)
Re-running with the same out_dir resumes.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from autocoa_verl.errors import user_errors


@hydra.main(config_path="pkg://hydra_configs", config_name="synthesis", version_base=None)
@user_errors
def main(cfg: DictConfig) -> None:
    from autocoa_verl.agent.standalone import LocalVLLMServer, StandaloneRollout, compose_rl_config, sampling_params
    from autocoa_verl.data.qa_files import read_qa_jsonl
    from autocoa_verl.data.sft_files import read_sft_parquet
    from autocoa_verl.data.synthesis import synthesize, synthesize_pairs

    questions = read_qa_jsonl(cfg.questions)
    config = compose_rl_config([f"actor_rollout_ref.rollout.response_length={cfg.response_length}",
                                f"coa.retriever.url={cfg.retriever_url}", f"coa.preset={cfg.preset}",
                                "coa.schedule.kind=always_real", *cfg.loop_overrides])
    server = LocalVLLMServer(cfg.teacher, max_model_len=cfg.max_model_len, **OmegaConf.to_container(cfg.engine))
    try:
        rollout = StandaloneRollout(config, server)
        sampling = sampling_params(**OmegaConf.to_container(cfg.sampling))
        counts = server.run(synthesize(rollout, questions, cfg.out_dir, coa_target=cfg.coa_target,
                                       cot_target=cfg.cot_target, samples_per_question=cfg.samples_per_question,
                                       batch_size=cfg.batch_size, sampling_params=sampling, preset=cfg.preset))
        pairs = None
        if cfg.pairs and counts["coa"] + counts["cot"]:
            kept = read_sft_parquet(f"{cfg.out_dir}/trajectories.parquet", "trajectories")
            pairs = server.run(synthesize_pairs(rollout, kept, {str(q["id"]): q for q in questions}, cfg.out_dir,
                                                batch_size=cfg.batch_size, sampling_params=sampling,
                                                preset=cfg.preset))
    finally:
        server.shutdown()
    written = f"-> {cfg.out_dir}/trajectories.parquet" if counts["coa"] + counts["cot"] else "(nothing written)"
    print(f"kept {counts['coa']} CoA + {counts['cot']} CoT trajectories ({counts['questions_done']} questions "
          f"done) {written}")
    if pairs is not None:
        print(f"{pairs['pairs']} contrastive pairs ({pairs['acting_chosen']} prefer acting) "
              f"-> {cfg.out_dir}/pairs.parquet")


if __name__ == "__main__":
    main()
