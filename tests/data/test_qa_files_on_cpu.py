import json

import pandas as pd
import pytest

from autocoa_verl.data.qa_files import QAFileError, main, read_qa_jsonl


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_convert_a_flashrag_file(tmp_path):
    src = _write(tmp_path / "nq.jsonl", [
        json.dumps({"id": "q1", "question": "who wrote hamlet?", "golden_answers": ["Shakespeare"]}),
        "",
        json.dumps({"id": 2, "question": "capital of france?", "golden_answers": "Paris", "metadata": {}}),
    ])
    main([str(src), str(tmp_path / "nq.parquet"), "--split", "test"])
    frame = pd.read_parquet(tmp_path / "nq.parquet")
    assert list(frame["data_source"]) == ["nq", "nq"]
    assert list(frame.iloc[1]["reward_model"]["ground_truth"]["target"]) == ["Paris"]
    assert frame.iloc[0]["extra_info"]["id"] == "q1" and frame.iloc[0]["extra_info"]["split"] == "test"
    assert frame.iloc[0]["prompt"][0]["content"].endswith("Question: who wrote hamlet?")


def test_every_bad_row_is_named_by_line_and_field(tmp_path):
    src = _write(tmp_path / "bad.jsonl", [
        json.dumps({"id": "a", "question": "ok?", "golden_answers": ["x"]}),
        "{not json",
        json.dumps({"id": "b", "golden_answers": ["x"]}),
        json.dumps({"id": "a", "question": "dup?", "golden_answers": ["x"]}),
        json.dumps({"id": "c", "question": "  ", "golden_answers": ["x"]}),
        json.dumps({"id": "d", "question": "q?", "golden_answers": []}),
        json.dumps(["a list"]),
    ])
    with pytest.raises(QAFileError) as error:
        read_qa_jsonl(src)
    message = str(error.value)
    assert f"{src}: 6 bad row(s)" in message
    assert f"{src}:2: invalid JSON" in message
    assert f"{src}:3: missing field 'question'" in message
    assert f"{src}:4: field 'id': duplicate id 'a'" in message
    assert f"{src}:5: field 'question' must be a non-empty string" in message
    assert f"{src}:6: field 'golden_answers' must be a non-empty list" in message
    assert f"{src}:7: row must be a JSON object" in message


def test_cli_exits_with_the_error_and_writes_nothing(tmp_path, capsys):
    src = _write(tmp_path / "bad.jsonl", [json.dumps({"id": "a", "question": "q"})])
    with pytest.raises(SystemExit) as exit_info:
        main([str(src), str(tmp_path / "out.parquet")])
    assert exit_info.value.code == 2
    assert "missing field 'golden_answers'" in capsys.readouterr().err
    assert not (tmp_path / "out.parquet").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.jsonl"), str(tmp_path / "out.parquet")])
    assert "QA file not found" in capsys.readouterr().err
