"""Can the toy world's model know its world? Closed-book recall of the corpus's facts before and after reading it.

A real LLM has read Wikipedia, so its world model (the policy writing its own observations) can hold the answer. The
toy world's facts are invented, and SmolLM2 has read none of them: measured in ``world_model.md``, its simulated
observations hold the hop's gold answer 0-6% of the time, so the simulated steps of the 5:1 and fidelity-gated
schedules have nothing to teach. This benchmark measures what reading the corpus would buy and cost: plain PyTorch,
next-token loss on every passage (title and text, as a pretraining corpus holds them), epoch after epoch. After
each evaluated epoch, every fact that a split's gold chains use is asked as a cloze: the passage up to the answer
("...Pous Nan was born in"), greedy, and the fact counts as known when the continuation starts with the answer.
The pipeline's models are untouched; ``--save-model`` writes the reader out, e.g. for the SFT stages to start from.

    python benchmarks/knowledge_bench.py --out build/bench/knowledge --toy build/toy --model build/models/smollm2-135m
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.provenance import provenance, write_report  # noqa: E402


def cloze_facts(rows: list[dict], corpus: dict[str, str]) -> list[dict]:
    """One cloze per distinct (passage, answer) of the rows' gold chains: the passage's text up to the answer's first
    occurrence past its title line. A hop whose answer is not in its passage's text is left out.

    >>> corpus = {"person-1": '"Pous Nan"\\nPous Nan is a person. Pous Nan was born in Luquapom.'}
    >>> rows = [{"chain": [{"doc_id": "person-1", "answer": "Luquapom"}]}] * 2
    >>> cloze_facts(rows, corpus)
    [{'doc_id': 'person-1', 'prompt': '"Pous Nan"\\nPous Nan is a person. Pous Nan was born in', 'answer': 'Luquapom'}]
    """
    facts, seen = [], set()
    for row in rows:
        for hop in row.get("chain", ()):
            key = (hop["doc_id"], hop["answer"])
            text = corpus[hop["doc_id"]]
            body = text.index("\n") + 1 if "\n" in text else 0
            at = text.find(hop["answer"], body)
            if key in seen or at < 0:
                continue
            seen.add(key)
            facts.append({"doc_id": hop["doc_id"], "prompt": text[:at].rstrip(), "answer": hop["answer"]})
    return facts


def known(continuation: str, answer: str) -> bool:
    """The cloze is answered when the continuation starts with the answer, as a whole word.

    >>> known(" Luquapom. Pous Nan", "Luquapom"), known(" Luquapomia", "Luquapom"), known(" Hezus", "Luquapom")
    (True, False, False)
    """
    text = continuation.lstrip()
    return text.startswith(answer) and not text[len(answer):len(answer) + 1].isalnum()


def recall(model, tokenizer, facts: list[dict], batch: int = 32, new_tokens: int = 8) -> float:
    """Share of ``facts`` whose greedy continuation is :func:`known`; prompts are left-padded into batches."""
    import torch

    tokenizer.padding_side = "left"
    hits = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(facts), batch):
            chunk = facts[i : i + batch]
            enc = tokenizer([f["prompt"] for f in chunk], return_tensors="pt", padding=True)
            out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            hits += sum(known(t, f["answer"]) for t, f in zip(texts, chunk))
    model.train()
    return hits / len(facts) if facts else 0.0


def read_corpus(args, corpus: dict[str, str], facts: list[dict]) -> tuple[list[dict], int]:
    """Trains on every passage for ``--epochs`` epochs; returns a row per epoch (0: before), with recall on the
    evaluated ones, and the corpus's token count. ``--save-model``: where the trained model goes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, attn_implementation="sdpa")
    passages = [tokenizer(text + tokenizer.eos_token, return_tensors="pt")["input_ids"][0] for text in corpus.values()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(0)
    start = time.perf_counter()
    curve = [{"epoch": 0, "loss": None, "recall": recall(model, tokenizer, facts), "train_s": 0.0}]
    print(f"epoch 0: recall {curve[0]['recall']:.3f}", flush=True)
    train_s = 0.0
    for epoch in range(1, args.epochs + 1):
        order = rng.sample(range(len(passages)), len(passages))
        losses, tick = [], time.perf_counter()
        for i in range(0, len(order), args.batch):
            seqs = [passages[j] for j in order[i : i + args.batch]]
            ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=tokenizer.pad_token_id)
            attention = torch.nn.utils.rnn.pad_sequence([torch.ones_like(s) for s in seqs], batch_first=True)
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            target = attention[:, 1:].float()
            loss = (nll * target).sum() / target.sum()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        train_s += time.perf_counter() - tick
        row = {"epoch": epoch, "loss": sum(losses) / len(losses), "recall": None, "train_s": round(train_s, 1)}
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            row["recall"] = recall(model, tokenizer, facts)
        curve.append(row)
        print(f"epoch {epoch}: loss {row['loss']:.3f}, recall {row['recall']}, trained {train_s:.0f} s, "
              f"elapsed {time.perf_counter() - start:.0f} s", flush=True)
    if args.save_model:  # an HF model that has read its world, for the SFT stages to start from
        model.save_pretrained(args.save_model)
        tokenizer.save_pretrained(args.save_model)
    return curve, sum(len(p) for p in passages)


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = ["# Can the toy world's model know its world? (closed-book recall, CPU)", "",
             f"Commit `{report['commit']}`; command: `{report['command']}`; wall time {report['wall_s']:.0f} s.", "",
             f"{report['passages']} passages ({report['corpus_tokens']} tokens with EOS) read {s['epochs']} times: "
             f"batch {s['batch']}, AdamW lr {s['lr']}, plain PyTorch, fp32. Recall: {report['facts']} distinct facts "
             f"that the {s['split']} split's gold chains use, asked as clozes (greedy, 8 new tokens).", "",
             "| epochs read | mean train loss | recall | training s |", "|---|---|---|---|"]
    for row in report["curve"]:
        loss = "-" if row["loss"] is None else f"{row['loss']:.3f}"
        rec = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        lines.append(f"| {row['epoch']} | {loss} | {rec} | {row['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench/knowledge"))
    parser.add_argument("--toy", type=Path, default=Path("build/toy"), help="the toy world (corpus.jsonl, <split>.jsonl)")
    parser.add_argument("--model", type=Path, default=Path("build/models/smollm2-135m"))
    parser.add_argument("--split", default="dev", help="whose gold chains give the facts asked (default: dev)")
    parser.add_argument("--epochs", type=int, default=10, help="0: only the recall of --model as it is")
    parser.add_argument("--eval-every", type=int, default=2, help="epochs between recall measurements")
    parser.add_argument("--batch", type=int, default=16, help="passages per optimizer step")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--save-model", type=Path, help="write the model that has read the corpus here (HF dir)")
    args = parser.parse_args(argv)
    for path in (args.toy / "corpus.jsonl", args.toy / f"{args.split}.jsonl", args.model / "config.json"):
        if not path.is_file():
            parser.error(f"{path} not found (make toy-world models)")
    if args.epochs < 0 or args.eval_every < 1 or args.batch < 1:
        parser.error("--epochs must be >= 0, --eval-every and --batch >= 1")

    import torch

    from autocoa_verl.data.qa_files import read_qa_jsonl
    from retriever_server.corpus import load_corpus

    torch.manual_seed(0)
    try:  # both name the file, line and field of a bad row
        corpus = {doc["id"]: doc["contents"] for doc in load_corpus(args.toy / "corpus.jsonl")}
        facts = cloze_facts(read_qa_jsonl(args.toy / f"{args.split}.jsonl"), corpus)
    except ValueError as e:
        parser.error(str(e))
    start = time.perf_counter()
    curve, corpus_tokens = read_corpus(args, corpus, facts)
    report = {"passages": len(corpus), "corpus_tokens": corpus_tokens, "facts": len(facts), "curve": curve, "recall_before": curve[0]["recall"],
              "recall_after": curve[-1]["recall"], "wall_s": time.perf_counter() - start,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              **provenance("knowledge_bench.py", argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, "knowledge", report, markdown(report))


if __name__ == "__main__":
    main()
