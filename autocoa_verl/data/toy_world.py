"""The embedded toy world: a seeded, fictional knowledge base rendered as a FlashRAG corpus, with questions.

Run: ``python -m autocoa_verl.data.toy_world --out data/toy`` (``--help`` for sizes).

People, cities, organisations and regions with invented names are linked by relations (born in, founded by,
works for, headquartered in, lies in, years). Each entity gets one passage. Questions chain 1 to 3 relations
("Who founded the city where Arlo Venn was born?"), so they cannot be answered without searching, and every
question carries its gold chain of sub-questions, search queries and supporting passages. Questions that need no
search (the answer is stated in the question, or is small arithmetic) make *when to act* learnable and measurable.
The same seed and sizes always give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from autocoa_verl.errors import user_errors

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "h", "j", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "th", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "x", "m", "nd", "ss", "rt"]
_ORG_KINDS = ["Institute", "Guild", "Works", "Company", "Society", "Foundry", "Press", "Bank"]
_REGION_KINDS = ["Vale", "Coast", "Highlands", "Marches", "Basin", "Reach"]
_PETS = ["dog", "cat", "horse", "parrot", "goat", "owl"]


@dataclass(frozen=True)
class Relation:
    """One relation of the world: how to ask it, search for it, refer through it and state it.

    In ``question``, ``noun_phrase`` and ``sentence``, ``{x}``/``{y}`` are *mentions* ("the Zent Guild", "Arlo Venn",
    or a noun phrase), which carry their own article; ``query`` uses the bare name.
    """

    name: str
    subject: str
    object: str
    question: str
    query: str
    noun_phrase: str | None
    sentence: str


RELATIONS = {
    r.name: r
    for r in [
        Relation("born_in", "person", "city", "Where was {x} born?", "{x} birthplace",
                 "the city where {x} was born", "{x} was born in {y}."),
        Relation("birth_year", "person", "year", "What is the birth year of {x}?", "{x} birth year",
                 None, "{x} was born in the year {y}."),
        Relation("works_for", "person", "org", "Which organisation does {x} work for?", "{x} employer",
                 "the organisation that {x} works for", "{x} works for {y}."),
        Relation("city_founder", "city", "person", "Who founded {x}?", "{x} founder",
                 "the founder of {x}", "{x} was founded by {y}."),
        Relation("founding_year", "city", "year", "In what year was {x} founded?", "{x} founding year",
                 None, "{x} was founded in the year {y}."),
        Relation("region", "city", "region", "In which region does {x} lie?", "{x} region",
                 None, "{x} lies in {y}."),
        Relation("headquarters", "org", "city", "In which city is {x} headquartered?", "{x} headquarters",
                 "the city where {x} is headquartered", "{x} is headquartered in {y}."),
        Relation("org_founder", "org", "person", "Who founded {x}?", "{x} founder",
                 "the founder of {x}", "{x} was founded by {y}."),
    ]
}
# Chains of relations that make questions, by number of hops; each link's object type is the next one's subject.
CHAINS = {
    1: [("born_in",), ("birth_year",), ("works_for",), ("city_founder",), ("founding_year",), ("region",),
        ("headquarters",), ("org_founder",)],
    2: [("born_in", "city_founder"), ("born_in", "region"), ("born_in", "founding_year"),
        ("works_for", "headquarters"), ("works_for", "org_founder"), ("city_founder", "birth_year"),
        ("org_founder", "born_in"), ("headquarters", "region")],
    3: [("born_in", "city_founder", "birth_year"), ("works_for", "headquarters", "region"),
        ("works_for", "org_founder", "born_in"), ("born_in", "city_founder", "works_for"),
        ("works_for", "headquarters", "city_founder")],
}


@dataclass
class ToyWorldConfig:
    """Sizes of the world and of each question split."""

    seed: int = 0
    people: int = 300
    cities: int = 60
    orgs: int = 60
    regions: int = 12
    train: int = 1000
    dev: int = 100
    test: int = 200
    # share of questions that need no search (answer stated in the question, or small arithmetic)
    no_search_fraction: float = 0.25
    # among search questions, the share of 1-, 2- and 3-hop ones
    hop_weights: tuple[float, float, float] = (0.4, 0.35, 0.25)

    def __post_init__(self) -> None:
        for name in ("people", "cities", "orgs", "regions"):
            if getattr(self, name) < 2:
                raise ValueError(f"toy world: {name} must be >= 2, got {getattr(self, name)}")
        for name in ("train", "dev", "test"):
            if getattr(self, name) < 0:
                raise ValueError(f"toy world: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.no_search_fraction <= 1.0:
            raise ValueError(f"toy world: no_search_fraction must be in [0, 1], got {self.no_search_fraction}")
        if len(self.hop_weights) != 3 or min(self.hop_weights) < 0 or sum(self.hop_weights) <= 0:
            raise ValueError(f"toy world: hop_weights must be 3 non-negative weights, got {self.hop_weights}")


@dataclass
class Entity:
    id: str
    kind: str
    name: str
    facts: dict[str, str] = field(default_factory=dict)


class _NameMaker:
    """Unique invented names from syllables (deterministic for a given rng)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def word(self, syllables: int) -> str:
        parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
        return ("".join(parts) + self.rng.choice(_CODAS)).capitalize()

    def unique(self, make) -> str:
        for _ in range(10_000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("toy world: ran out of unique names; lower the sizes")


class ToyWorld:
    """The knowledge base; ``ToyWorld(config)`` builds it deterministically from ``config.seed``."""

    def __init__(self, config: ToyWorldConfig) -> None:
        self.config = config
        rng = random.Random(config.seed)
        names = _NameMaker(rng)
        self.regions = [Entity(f"region-{i}", "region", f"{names.unique(lambda: names.word(2))} "
                               f"{rng.choice(_REGION_KINDS)}") for i in range(config.regions)]
        self.cities = [Entity(f"city-{i}", "city", names.unique(lambda: names.word(rng.randint(2, 3))))
                       for i in range(config.cities)]
        self.people = [Entity(f"person-{i}", "person",
                              names.unique(lambda: f"{names.word(rng.randint(1, 2))} {names.word(rng.randint(1, 2))}"))
                       for i in range(config.people)]
        self.orgs = [Entity(f"org-{i}", "org", names.unique(lambda: f"{names.word(2)} {rng.choice(_ORG_KINDS)}"))
                     for i in range(config.orgs)]
        for person in self.people:
            person.facts["birth_year"] = str(rng.randint(1700, 1950))
            person.facts["born_in"] = rng.choice(self.cities).id
            person.facts["works_for"] = rng.choice(self.orgs).id
        for city in self.cities:
            founder = rng.choice(self.people)
            city.facts["city_founder"] = founder.id
            city.facts["founding_year"] = str(int(founder.facts["birth_year"]) + rng.randint(20, 60))
            city.facts["region"] = rng.choice(self.regions).id
        for org in self.orgs:
            org.facts["org_founder"] = rng.choice(self.people).id
            org.facts["headquarters"] = rng.choice(self.cities).id
        self.entities = {e.id: e for e in self.regions + self.cities + self.people + self.orgs}
        self._rng = rng

    def value(self, entity: Entity, relation: str) -> str:
        """The object of ``relation`` for ``entity``, as an answer (an entity's name or a year)."""
        obj = entity.facts[relation]
        return self.entities[obj].name if obj in self.entities else obj

    @staticmethod
    def mention(entity: Entity) -> str:
        """How text refers to ``entity``: organisations and regions take "the"."""
        return f"the {entity.name}" if entity.kind in ("org", "region") else entity.name

    def _object_mention(self, entity: Entity, relation: str) -> str:
        obj = entity.facts[relation]
        return self.mention(self.entities[obj]) if obj in self.entities else obj

    def passage(self, entity: Entity) -> dict[str, str]:
        """The entity's FlashRAG passage: ``{"id", "contents": "\\"Title\\"\\ntext"}``."""
        kind = {"person": "a person", "city": "a city", "org": "an organisation", "region": "a region"}[entity.kind]
        sentences = [f"{entity.name} is {kind}."]
        for r in entity.facts:
            sentence = RELATIONS[r].sentence.format(x=self.mention(entity), y=self._object_mention(entity, r))
            sentences.append(sentence[0].upper() + sentence[1:])
        return {"id": entity.id, "contents": f'"{entity.name}"\n' + " ".join(sentences)}

    def corpus(self) -> Iterator[dict[str, str]]:
        for entity in self.entities.values():
            yield self.passage(entity)

    def chain_question(self, start: Entity, chain: tuple[str, ...]) -> dict:
        """A question following ``chain`` from ``start``, with its gold sub-question chain."""
        steps, entity = [], start
        for relation_name in chain:
            relation = RELATIONS[relation_name]
            answer = self.value(entity, relation_name)
            steps.append({
                "question": relation.question.format(x=self.mention(entity)),
                "query": relation.query.format(x=entity.name),
                "answer": answer,
                "doc_id": entity.id,
            })
            entity = self.entities.get(entity.facts[relation_name])
        phrase = self.mention(start)
        for relation_name in chain[:-1]:
            phrase = RELATIONS[relation_name].noun_phrase.format(x=phrase)
        question = RELATIONS[chain[-1]].question.format(x=phrase)
        return {"question": question, "golden_answers": [steps[-1]["answer"]], "hops": len(chain),
                "needs_search": True, "chain": steps, "kind": "+".join(chain)}

    def no_search_question(self, names: _NameMaker) -> dict:
        """A question whose answer is in the question itself, or is small arithmetic."""
        rng = self._rng
        if rng.random() < 0.5:
            a, b = rng.randint(2, 40), rng.randint(2, 40)
            return {"question": f"What is {a} plus {b}?", "golden_answers": [str(a + b)], "hops": 0,
                    "needs_search": False, "chain": [], "kind": "arithmetic"}
        owner = f"{names.word(2)} {names.word(1)}"
        pet, pet_name = rng.choice(_PETS), names.word(2)
        return {"question": f"{owner} has a {pet} named {pet_name}. What is the name of {owner}'s {pet}?",
                "golden_answers": [pet_name], "hops": 0, "needs_search": False, "chain": [], "kind": "stated"}

    def questions(self, total: int, progress: bool = False) -> list[dict]:
        """``total`` distinct questions in the configured mix of hops and no-search ones."""
        rng, config = self._rng, self.config
        names = _NameMaker(random.Random(config.seed + 1))
        starts = {"person": self.people, "city": self.cities, "org": self.orgs}
        seen: set[str] = set()
        out: list[dict] = []
        attempts = 0
        with tqdm(total=total, desc="toy questions", disable=not progress, unit="q") as bar:
            while len(out) < total:
                attempts += 1
                if attempts > 50 * total + 1000:
                    raise RuntimeError(f"toy world: cannot make {total} distinct questions; raise the world sizes")
                if rng.random() < config.no_search_fraction:
                    q = self.no_search_question(names)
                else:
                    hops = rng.choices([1, 2, 3], weights=config.hop_weights)[0]
                    chain = rng.choice(CHAINS[hops])
                    q = self.chain_question(rng.choice(starts[RELATIONS[chain[0]].subject]), chain)
                if q["question"] in seen:
                    continue
                seen.add(q["question"])
                out.append(q)
                bar.update(1)
        return out


def write_jsonl(path: Path, rows) -> int:
    """Writes ``rows`` as JSON lines; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def build_toy_world(config: ToyWorldConfig, out_dir: str | Path, preset: str = "search_r1",
                    progress: bool = True) -> dict:
    """Writes ``corpus.jsonl``, ``{train,dev,test}.jsonl`` (FlashRAG QA), ``{split}.parquet`` (verl RL) and
    ``manifest.json`` into ``out_dir``; returns the manifest."""
    from autocoa_verl.data.qa_files import write_verl_parquet

    out = Path(out_dir)
    world = ToyWorld(config)
    corpus = list(tqdm(world.corpus(), total=len(world.entities), desc="toy corpus", disable=not progress))
    manifest = {"config": asdict(config), "preset": preset, "corpus": write_jsonl(out / "corpus.jsonl", corpus)}
    questions = world.questions(config.train + config.dev + config.test, progress=progress)
    bounds = {"train": (0, config.train), "dev": (config.train, config.train + config.dev),
              "test": (config.train + config.dev, config.train + config.dev + config.test)}
    for split, (lo, hi) in bounds.items():
        rows = [{"id": f"toy-{split}-{i}", **q} for i, q in enumerate(questions[lo:hi])]
        write_jsonl(out / f"{split}.jsonl", rows)
        write_verl_parquet(rows, out / f"{split}.parquet", data_source="toy_world", split=split, preset=preset)
        manifest[split] = {"questions": len(rows), "needs_search": sum(r["needs_search"] for r in rows),
                           "by_hops": {h: sum(r["hops"] == h for r in rows) for h in range(4)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@user_errors
def main(argv: list[str] | None = None) -> None:
    defaults = ToyWorldConfig()
    parser = argparse.ArgumentParser(description="Build the embedded toy world: corpus, QA splits, verl parquet.")
    parser.add_argument("--out", required=True, help="output directory")
    for name in ("seed", "people", "cities", "orgs", "regions", "train", "dev", "test"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name), help=f"(default {getattr(defaults, name)})")
    parser.add_argument("--no-search-fraction", type=float, default=defaults.no_search_fraction,
                        help=f"share of questions answerable without search (default {defaults.no_search_fraction})")
    parser.add_argument("--preset", default="search_r1", help="tag protocol of the parquet prompts (search_r1|autocoa)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    config = ToyWorldConfig(seed=args.seed, people=args.people, cities=args.cities, orgs=args.orgs,
                            regions=args.regions, train=args.train, dev=args.dev, test=args.test,
                            no_search_fraction=args.no_search_fraction)
    manifest = build_toy_world(config, args.out, preset=args.preset, progress=not args.quiet)
    print(f"toy world in {args.out}: {manifest['corpus']} passages, "
          + ", ".join(f"{s} {manifest[s]['questions']} questions" for s in ("train", "dev", "test")))


if __name__ == "__main__":
    main()
