"""Shared fixtures: the tiny model and a small toy world, built once per test session into a temp dir."""

import atexit
import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_SESSION = pytest.StashKey[pytest.Session]()


def pytest_sessionstart(session):
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leaves with the session's exit status once pytest is done, without the interpreter's own teardown.

    The suite runs native engines in this process (Ray drivers, vLLM's engine client, torch's thread pools); their
    finalisers have crashed that teardown after a finished session: a CI run printed "336 passed", then make reported
    a segmentation fault, and the run failed with every test passed. Every fixture has been torn down and every report
    written by now; the exit handlers still run (pytest's own release its temp directories; in that CI run the
    teardown got past them, to the objects' finalisers), only the finalisers are skipped. A crash *during* the tests still fails the run. Not when pytest runs inside another
    program (``pytest.main``): that program's process must live on.
    """
    session = config.stash.get(_SESSION, None)
    if session is None or not _RUN_AS_PROGRAM:
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))


# pytest as the program (``python -m pytest``, ``pytest``), not called from another one
_RUN_AS_PROGRAM = sys.argv[0].endswith(("pytest", "py.test", os.path.join("pytest", "__main__.py")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from autocoa_verl.models import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def toy_world_dir(tmp_path_factory):
    from autocoa_verl.data.toy_world import ToyWorldConfig, build_toy_world

    out = tmp_path_factory.mktemp("toy")
    build_toy_world(ToyWorldConfig(seed=3, people=40, cities=10, orgs=10, regions=4, train=60, dev=10, test=20),
                    out, progress=False)
    return out


@pytest.fixture(scope="session")
def bm25_index(toy_world_dir, tmp_path_factory):
    from retriever_server.bm25 import BM25Retriever

    index_dir = tmp_path_factory.mktemp("bm25")
    BM25Retriever.build(toy_world_dir / "corpus.jsonl", index_dir, progress=False)
    return index_dir


@pytest.fixture(scope="session")
def bm25(toy_world_dir, bm25_index):
    from retriever_server.bm25 import BM25Retriever

    return BM25Retriever.open(toy_world_dir / "corpus.jsonl", bm25_index)


@pytest.fixture(scope="module")
def bm25_server(bm25):
    from retriever_server.app import create_app
    from retriever_server.serve import ServerThread

    server = ServerThread(create_app(bm25, cache_size=128)).start()
    yield server
    server.stop()


# Property-based tests: reproducible (a fixed example sequence), no example database in the tree, and no per-example
# deadline (a busy 2-core machine would flake).
from hypothesis import settings  # noqa: E402

settings.register_profile("autocoa", derandomize=True, database=None, deadline=None, max_examples=300)
settings.load_profile("autocoa")


@pytest.fixture(scope="session")
def taught(tiny_model_dir, tiny_tokenizer, bm25, toy_world_dir, tmp_path_factory):
    """The tiny model taught one real trajectory (search, bm25's observation, answer) for the first one-hop test
    question, once per session: ``(model_dir, response, question)``."""
    import json

    from tests.agent.overfit import teach_one_search

    questions = [json.loads(line) for line in open(toy_world_dir / "test.jsonl")]
    question = next(q for q in questions if q["hops"] == 1)
    model = tmp_path_factory.mktemp("taught")
    return model, teach_one_search(tiny_model_dir, tiny_tokenizer, bm25, question, model), question
