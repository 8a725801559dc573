import pytest

from autocoa_verl.verl_compat import PRIVATE, PrivateSymbol, problems


@pytest.mark.parametrize("symbol", PRIVATE, ids=[f"{s.owner.split(':')[1]}.{s.name or ''}" for s in PRIVATE])
def test_the_private_verl_symbol_we_rely_on_is_still_there(symbol):
    assert symbol.problem() is None, f"{symbol.problem()}: needed because {symbol.why}"


def test_a_renamed_or_changed_symbol_is_reported_with_its_reason():
    gone = PrivateSymbol("verl.trainer.sft_trainer:SFTTrainer", "_build_engine_v2", params=("self",), why="w")
    changed = PrivateSymbol("verl.trainer.sft_trainer:SFTTrainer", "_build_engine", params=("self", "x"), why="w")
    unassigned = PrivateSymbol("verl.trainer.sft_trainer:SFTTrainer", "nothing", set_in="_build_engine", why="w")
    assert gone.problem() == "verl.trainer.sft_trainer:SFTTrainer._build_engine_v2 is gone"
    assert "takes ('self',), we call it with ('self', 'x')" in changed.problem()
    assert "no longer assigns self.nothing" in unassigned.problem()
    uncalled = PrivateSymbol("verl.trainer.sft_trainer:SFTTrainer", "_build_engine", calls="nothing_of_the_kind",
                             why="w")
    assert uncalled.problem() == "verl.trainer.sft_trainer:SFTTrainer._build_engine no longer calls nothing_of_the_kind"
    assert "is gone" in PrivateSymbol("verl.nope:X", "y", why="w").problem()
    assert problems() == []
