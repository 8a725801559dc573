"""The evaluation run: models x methods x datasets x samples -> per-question JSONL, a JSON summary, a markdown table in
the paper's layout (methods x datasets) and PNG plots, in one run directory. Resumable: a record is appended as soon
as its batch finishes, and a re-run skips every (question, sample) already in the file.

Layout of ``out_dir``:  ``records/<dataset>/<row label>.jsonl``, ``summary.json``, ``report.md``, ``plots/*.png``.
A *row label* is the method for the baselines (run with ``baseline_model``) and ``agent (<model>)`` for the agent.
"""

from __future__ import annotations

import glob
import hashlib
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from autocoa_verl.data.qa_files import read_qa_jsonl
from autocoa_verl.errors import ConfigError
from autocoa_verl.jsonl import JsonlRecords

METRICS = ("em", "f1", "subem", "format_ok", "searches", "response_tokens", "wall_s")


def load_dataset(path: str | Path, limit: int | None = None) -> list[dict]:
    """A FlashRAG QA jsonl (``id``, ``question``, ``golden_answers``; errors name file, line and field)."""
    rows = read_qa_jsonl(path)
    return rows[:limit] if limit else rows


class RecordFile(JsonlRecords):
    """One row label on one dataset: the records so far, and which (question, sample) pairs they cover."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.done = {(r["id"], r["sample"]) for r in self.records}

    def add(self, records: Iterable[dict]) -> list[dict]:
        records = super().add(records)
        self.done.update((r["id"], r["sample"]) for r in records)
        return records


def summarize(records: Sequence[dict]) -> dict[str, Any]:
    """Per metric: mean over questions of each sample, then mean and spread (std) over samples; accuracy by number of
    actions and by hops; when-to-act where the data says whether search was needed.

    >>> s = summarize([{"id": "q", "sample": 0, "em": 1.0, "f1": 1.0, "subem": 1.0, "format_ok": 1.0, "searches": 1,
    ...                 "response_tokens": 9, "wall_s": 0.5, "hops": 1, "acted_when_needed": True},
    ...                {"id": "q", "sample": 1, "em": 0.0, "f1": 0.5, "subem": 0.0, "format_ok": 1.0, "searches": 0,
    ...                 "response_tokens": 5, "wall_s": 0.5, "hops": 1, "acted_when_needed": False}])
    >>> s["questions"], s["samples"], s["em"], s["em_std"], s["when_to_act"], s["em_by_searches"]["1"]
    (1, 2, 0.5, 0.7071067811865476, 0.5, {'questions': 1, 'em': 1.0})
    """
    if not records:
        raise ValueError("summarize: no records")
    by_sample = defaultdict(list)
    for r in records:
        by_sample[r["sample"]].append(r)
    summary: dict[str, Any] = {"questions": len({r["id"] for r in records}), "samples": len(by_sample)}
    for metric in METRICS:
        per_sample = [statistics.fmean(r[metric] for r in rs) for rs in by_sample.values()]
        summary[metric] = statistics.fmean(per_sample)
        summary[f"{metric}_std"] = statistics.stdev(per_sample) if len(per_sample) > 1 else 0.0
    judged = [r["acted_when_needed"] for r in records if "acted_when_needed" in r]
    if judged:
        summary["when_to_act"] = statistics.fmean(judged)
    for key in ("searches", "hops"):
        groups = defaultdict(list)
        for r in records:
            if key in r:
                groups[r[key]].append(r["em"])
        if groups:
            summary[f"em_by_{key}"] = {str(k): {"questions": len(v), "em": statistics.fmean(v)}
                                       for k, v in sorted(groups.items())}
    return summary


def markdown_report(summary: dict[str, dict[str, dict]]) -> str:
    """The paper's layout (EM, methods x datasets), then one detail table per dataset (latency: seconds from a
    question's start to its record, with ``batch_size`` questions in flight)."""
    datasets = list(summary)
    labels = list(dict.fromkeys(label for d in datasets for label in summary[d]))
    lines = ["# Evaluation", "", "EM (mean over samples; ± std when n > 1)", "",
             "| method | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]

    def cell(s: dict | None) -> str:
        if s is None:
            return "—"
        return f"{s['em']:.3f}" + (f" ± {s['em_std']:.3f}" if s["samples"] > 1 else "")

    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cell(summary[d].get(label)) for d in datasets) + " |")
    for dataset in datasets:
        lines += ["", f"## {dataset}", "",
                  "| method | questions | EM | F1 | sub-EM | format ok | actions / q | when-to-act | tokens / q "
                  "| latency s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, s in summary[dataset].items():
            when = f"{s['when_to_act']:.3f}" if "when_to_act" in s else "—"
            lines.append(f"| {label} | {s['questions']} | {s['em']:.3f} | {s['f1']:.3f} | {s['subem']:.3f} | "
                         f"{s['format_ok']:.3f} | {s['searches']:.2f} | {when} | {s['response_tokens']:.1f} | "
                         f"{s['wall_s']:.2f} |")
    return "\n".join(lines) + "\n"


def plot_all(summary: dict[str, dict[str, dict]], records: dict[str, dict[str, list[dict]]], out: Path) -> list[Path]:
    """``method_comparison.png`` (EM per method and dataset), and per dataset ``<dataset>_em_by_actions.png`` and
    ``<dataset>_action_histogram.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    written = []
    datasets = list(summary)
    labels = list(dict.fromkeys(label for d in datasets for label in summary[d]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels) * len(datasets)), 4))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        ems = [summary[d].get(label, {}).get("em", 0.0) for d in datasets]
        errs = [summary[d].get(label, {}).get("em_std", 0.0) for d in datasets]
        ax.bar(np.arange(len(datasets)) + i * width, ems, width, yerr=errs, label=label)
    ax.set_xticks(np.arange(len(datasets)) + width * (len(labels) - 1) / 2, datasets)
    ax.set_ylabel("EM"), ax.set_ylim(0, 1), ax.legend(fontsize=8), ax.set_title("Method comparison")
    fig.tight_layout()
    written.append(out / "method_comparison.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    for dataset in datasets:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, s in summary[dataset].items():
            points = sorted((int(k), v["em"]) for k, v in s.get("em_by_searches", {}).items())
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xlabel("actions (searches) in the trajectory"), ax.set_ylabel("EM"), ax.set_ylim(0, 1)
        ax.set_title(f"{dataset}: accuracy by number of actions"), ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / f"{dataset}_em_by_actions.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        most = max((r["searches"] for rs in records[dataset].values() for r in rs), default=0)
        bins = np.arange(most + 2) - 0.5
        ax.hist([[r["searches"] for r in rs] for rs in records[dataset].values()], bins=bins,
                label=list(records[dataset]))
        ax.set_xticks(range(most + 1))
        ax.set_xlabel("actions per question"), ax.set_ylabel("questions"), ax.legend(fontsize=8)
        ax.set_title(f"{dataset}: action counts")
        fig.tight_layout()
        written.append(out / f"{dataset}_action_histogram.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def write_report(out_dir: Path, records: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, dict]]:
    """summary.json, report.md and plots/ from the run's records (this invocation's and earlier ones')."""
    summary = {d: {label: summarize(rs) for label, rs in by_label.items() if rs} for d, by_label in records.items()}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "report.md").write_text(markdown_report(summary))
    plot_all(summary, records, out_dir / "plots")
    return summary


def row_labels(models: dict[str, str], methods: Sequence[str], baseline_model: str) -> list[tuple[str, str, str]]:
    """(row label, model name, method): every baseline on ``baseline_model``, the agent on every model.

    >>> row_labels({"base": "/b", "rl": "/r"}, ["direct", "agent"], "base")
    [('direct', 'base', 'direct'), ('agent (base)', 'base', 'agent'), ('agent (rl)', 'rl', 'agent')]
    """
    from autocoa_verl.eval.methods import METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"methods: unknown {unknown}; choose from {list(METHODS)}")
    if baseline_model not in models:
        raise ConfigError(f"baseline_model={baseline_model!r} is not one of models: {list(models)}")
    rows = []
    for name in models:
        for method in methods:
            if method == "agent":
                rows.append((f"agent ({name})", name, method))
            elif name == baseline_model:
                rows.append((method, name, method))
    return rows


def _models(cfg: Any) -> dict[str, str]:
    models = {str(k): str(Path(str(v)).resolve()) for k, v in cfg.models.items()}
    if not models:
        raise ConfigError("models: name at least one model (models.NAME=/path/to/hf_dir)")
    for name, path in models.items():
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"models.{name}={path!r}: no Hugging Face model there (config.json)")
    return models


def model_fingerprint(path: str | Path) -> str:
    """A digest of the HF model directory's files (names and contents: weights, config, tokenizer): the model's
    identity in the records, whatever path it is read from. A copied or moved directory keeps it; a checkpoint
    written again under the same path gets a new one."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).iterdir() if p.is_file()):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _made_with(record: dict) -> str | None:
    """Which model a record names: its fingerprint, else (written before fingerprints) its path, else nothing."""
    return record.get("model_fingerprint") or record.get("model_path")


def _check_same_model(file: RecordFile, name: str, path: str, fingerprint: str,
                      superseded: str = "refuse") -> RecordFile:
    """A resumed row must be the same model: the same fingerprint (``model_fingerprint``), or for records written
    before fingerprints the same path; records that name neither are taken as they are. Records of another model
    are refused (``superseded: refuse``), or with ``set_aside`` (a re-run whose chosen checkpoint moved) the file is
    moved, numbered, into ``superseded/`` beside it and the row starts again; returns the row's records file."""
    other = [r for r in file.records if _made_with(r) not in (None, fingerprint, path)]
    if not other:
        return file
    made = f"{other[0].get('model_path', '?')} (fingerprint {other[0].get('model_fingerprint', 'not recorded')})"
    now = f"models.{name}={path} (fingerprint {fingerprint})"
    if superseded != "set_aside":
        raise ConfigError(f"{file.path}: its records were made with {made}, not {now}; give another out_dir or "
                          "move that file away")
    parked = file.path.parent / "superseded"
    parked.mkdir(exist_ok=True)
    earlier = len(list(parked.glob(f"{glob.escape(file.path.stem)}.*.jsonl")))
    target = file.path.rename(parked / f"{file.path.stem}.{earlier}.jsonl")
    print(f"{file.path}: made with {made}, not {now}; set aside as {target}", flush=True)
    return RecordFile(file.path)


def _fewshot_exemplars(cfg: Any, datasets: dict[str, list[dict]]) -> list[dict]:
    """Few-shot ReAct's exemplars, from a training split that shares no question with the evaluated data."""
    if "react_fewshot" not in cfg.methods:
        return []
    from autocoa_verl.eval.methods import pick_exemplars

    if not cfg.react_exemplars:
        raise ConfigError("methods: react_fewshot needs react_exemplars=TRAIN_SPLIT.jsonl (rows with gold chains)")
    exemplars = pick_exemplars(load_dataset(cfg.react_exemplars), cfg.react_exemplar_count)
    evaluated = {r["question"] for rows in datasets.values() for r in rows}
    if any(r["question"] in evaluated for r in exemplars):
        raise ConfigError(f"react_exemplars={cfg.react_exemplars!r}: an exemplar question is in an evaluated "
                          "dataset (give a training split)")
    return exemplars


def _run_model(cfg: Any, model_name: str, model_path: str, fingerprint: str, todo: list[tuple], files: dict,
               exemplars: list[dict]):
    """One engine for ``model_path``; runs its ``(dataset, label, method, sample, rows)`` jobs batch by batch,
    appending the records and printing progress."""
    from omegaconf import OmegaConf

    from autocoa_verl.agent.retriever_client import RetrieverClient
    from autocoa_verl.agent.standalone import LocalVLLMServer, StandaloneRollout, compose_rl_config
    from autocoa_verl.eval.methods import Methods

    sampling = {"temperature": cfg.sampling.temperature if cfg.samples > 1 else 0.0, "top_p": cfg.sampling.top_p}
    server = LocalVLLMServer(model_path, max_model_len=cfg.max_model_len, seed=cfg.seed,
                             **OmegaConf.to_container(cfg.engine))
    loop_config = compose_rl_config([f"actor_rollout_ref.rollout.response_length={cfg.max_tokens}",
                                     f"coa.retriever.url={cfg.retriever_url}", f"coa.preset={cfg.preset}",
                                     "coa.schedule.validation=real", *cfg.loop_overrides])

    async def run() -> None:
        async with RetrieverClient(cfg.retriever_url, topk=cfg.topk) as retriever:
            methods = Methods(server, server.tokenizer, retriever, lambda: StandaloneRollout(loop_config, server),
                              max_tokens=cfg.baseline_max_tokens or cfg.max_tokens,
                              max_actions=loop_config.coa.max_actions,
                              sampling=sampling, topk=cfg.topk, exemplars=exemplars)
            for dataset, label, method, sample, rows in todo:
                done, correct, start_s = 0, 0.0, time.perf_counter()
                for start in range(0, len(rows), cfg.batch_size):
                    batch = rows[start : start + cfg.batch_size]
                    records = await methods.run(method, batch, sample)
                    files[dataset, label].add({**r, "label": label, "model": model_name, "model_path": model_path,
                                               "model_fingerprint": fingerprint, "sample": sample}
                                              for r in records)
                    done, correct = done + len(batch), correct + sum(r["em"] for r in records)
                    print(f"[eval] {dataset} | {label} | sample {sample}: {done}/{len(rows)} questions, "
                          f"EM so far {correct / done:.3f} ({time.perf_counter() - start_s:.0f} s)", flush=True)

    try:
        server.run(run())
    finally:
        server.shutdown()


def run_evaluation(cfg: Any) -> dict[str, dict[str, dict]]:
    """The whole run of ``hydra_configs/eval.yaml`` (models x methods x datasets x samples), resumable; one engine
    per model, started only if that model has questions left."""
    from omegaconf import OmegaConf

    from autocoa_verl.agent.retriever_client import check_retriever

    if cfg.superseded not in ("refuse", "set_aside"):
        raise ConfigError(f"superseded={cfg.superseded!r}: give refuse or set_aside")
    out_dir = Path(cfg.out_dir)
    models = _models(cfg)
    plan = row_labels(models, list(cfg.methods), cfg.baseline_model or next(iter(models)))
    datasets = {str(name): load_dataset(path, cfg.limit) for name, path in cfg.datasets.items()}
    if set(cfg.methods) & {"rag", "react", "react_fewshot", "agent"}:
        check_retriever(cfg.retriever_url, field="retriever_url")
    exemplars = _fewshot_exemplars(cfg, datasets)
    files = {(d, label): RecordFile(out_dir / "records" / d / f"{label}.jsonl")
             for d in datasets for label, _, _ in plan}
    model_of = {label: name for label, name, _ in plan}
    fingerprints = {name: model_fingerprint(path) for name, path in models.items()}
    for (d, label), file in files.items():
        name = model_of[label]
        files[d, label] = _check_same_model(file, name, models[name], fingerprints[name], cfg.superseded)
    (out_dir / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    for model_name, model_path in models.items():
        todo = [(d, label, method, s, [r for r in rows if (r["id"], s) not in files[d, label].done])
                for label, name, method in plan if name == model_name
                for d, rows in datasets.items() for s in range(cfg.samples)]
        todo = [t for t in todo if t[4]]
        if todo:
            _run_model(cfg, model_name, model_path, fingerprints[model_name], todo, files, exemplars)
    # the report covers this run's questions and samples; records of others (a larger limit before) stay on disk
    asked = {d: {(r["id"], s) for r in rows for s in range(cfg.samples)} for d, rows in datasets.items()}
    records = {d: {label: [r for r in files[d, label].records if (r["id"], r["sample"]) in asked[d]]
                   for label, _, _ in plan} for d in datasets}
    return write_report(out_dir, records)
