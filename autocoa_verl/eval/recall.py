"""Is the retriever up, and does it find the gold passages? Waits for a server's ``/health`` (bounded), then sends
every gold sub-query of a QA file with gold chains (the toy world's) and prints recall@k.

Run: ``python -m autocoa_verl.eval.recall --url http://127.0.0.1:8000 --questions build/toy/test.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio

from autocoa_verl.agent.retriever_client import RetrieverClient, check_retriever
from autocoa_verl.errors import ConfigError, user_errors


async def gold_recall(url: str, rows: list[dict], topk: int) -> tuple[int, float]:
    """(sub-queries, recall@topk) of the gold chains' queries against their gold passages."""
    steps = [step for row in rows for step in row.get("chain", [])]
    if not steps:
        raise ConfigError("--questions: no row has a gold chain ('chain' with 'query' and 'doc_id')")
    async with RetrieverClient(url, topk=topk) as client:
        hits = await client.search([step["query"] for step in steps])
    return len(steps), sum(step["doc_id"] in [p.id for p in h] for step, h in zip(steps, hits)) / len(steps)


@user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the retriever server")
    parser.add_argument("--questions", required=True, help="QA jsonl whose rows carry gold chains")
    parser.add_argument("--topk", type=int, default=3, help="passages per query (default %(default)s)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the server (default %(default)s)")
    args = parser.parse_args(argv)
    from autocoa_verl.data.qa_files import read_qa_jsonl

    rows = read_qa_jsonl(args.questions)
    health = check_retriever(args.url, "--url", timeout_s=2.0, wait_s=args.wait)
    n, recall = asyncio.run(gold_recall(args.url, rows, args.topk))
    print(f"{health.get('backend', '?')} retriever at {args.url}: {n} gold sub-queries of {args.questions}, "
          f"recall@{args.topk} {recall:.3f}")


if __name__ == "__main__":
    main()
