from autocoa_verl.jsonl import JsonlRecords


def test_appends_survive_reopening_and_a_line_cut_by_a_crash_is_skipped(tmp_path, capsys):
    path = tmp_path / "out" / "records.jsonl"
    log = JsonlRecords(path)
    assert log.records == [] and log.add(iter([{"id": 1}, {"id": 2}])) == [{"id": 1}, {"id": 2}]
    with open(path, "a") as f:
        f.write('{"id": 3, "resp')  # the process died mid-line
    reopened = JsonlRecords(path)
    assert reopened.records == [{"id": 1}, {"id": 2}]
    assert f"{path}:3: unreadable record skipped" in capsys.readouterr().out
