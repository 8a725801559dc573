import json

import pytest

from autocoa_verl.errors import ConfigError
from autocoa_verl.eval.recall import main
from retriever_server.serve import free_port


def test_recall_of_the_gold_sub_queries_through_the_server(bm25_server, toy_world_dir, capsys):
    main(["--url", bm25_server.url, "--questions", str(toy_world_dir / "test.jsonl")])
    out = capsys.readouterr().out
    steps = sum(len(json.loads(line)["chain"]) for line in open(toy_world_dir / "test.jsonl"))
    assert f"bm25 retriever at {bm25_server.url}: {steps} gold sub-queries" in out
    assert float(out.split("recall@3 ")[1]) > 0.9  # the toy world's queries name their entity


def test_a_server_that_never_comes_up_is_one_line(toy_world_dir, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exit_:
        main(["--url", url, "--questions", str(toy_world_dir / "test.jsonl"), "--wait", "1"])
    assert exit_.value.code == 1
    assert f"error: --url='{url}': no retriever answered /health within 1 s" in capsys.readouterr().err
