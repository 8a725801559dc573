import json

import pytest

from autocoa_verl.data.curriculum import zero_variance_share
from autocoa_verl.rl_logs import rollout_groups


def test_rollout_groups_are_the_samples_of_one_prompt_per_step(tmp_path):
    def line(step, prompt, score):
        return json.dumps({"input": prompt, "output": "...", "gts": "x", "score": score, "step": step}) + "\n"

    (tmp_path / "1.jsonl").write_text(line(1, "q1", 0.0) + line(1, "q1", 1.0) + line(1, "q2", 0.0) + line(1, "q2", 0.0))
    (tmp_path / "2.jsonl").write_text(line(2, "q1", 1.0) + line(2, "q1", 1.0))
    groups = rollout_groups(tmp_path)
    assert groups == {1: [[0.0, 1.0], [0.0, 0.0]], 2: [[1.0, 1.0]]}
    assert [zero_variance_share(g) for g in groups.values()] == [0.5, 1.0]


def test_a_bad_dump_names_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="rollout_data_dir"):
        rollout_groups(tmp_path)
    (tmp_path / "3.jsonl").write_text('{"input": "q", "score": 1, "step": 3}\n{"input": "q"}\n')
    with pytest.raises(ValueError, match=r"3.jsonl:2: not a rollout-dump line"):
        rollout_groups(tmp_path)


def test_the_cli_prints_one_line_per_step_and_refuses_a_log_without_steps(tmp_path, capsys):
    from autocoa_verl.rl_logs import main

    log = tmp_path / "rl.log"
    log.write_text("noise\nstep:1 - critic/score/mean:0.0 - timing_s/step:3.0\nstep:2 - critic/score/mean:0.5\n")
    main([str(log)])
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["RL step 1", "RL step 2"]
    log.write_text("the run died before its first step\n")
    with pytest.raises(SystemExit, match="no 'step:N - ...' metric lines"):
        main([str(log)])
