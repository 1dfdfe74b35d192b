"""Writes text_task.jsonl: the small text task the ``train`` check runs on real checkpoints.

Written for this project (no data set is downloaded or copied): a record in one fixed format is
rewritten into another, e.g.

    prompt: "name: Ada Moreau | born: 1874 | city: Lyon\\n=>"    target: " Moreau, Ada (1874, Lyon)\\n"

A pretrained model does not know this output format, but every part of the answer is in the prompt,
so a prefix alone can teach it in a few dozen steps: the held-out loss on the target tokens falls
far below its start. Deterministic: re-running the script writes the same bytes
(`python -m harness.matrix.data.make_text_task`); tests check the shipped file is what it writes.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

FIRST = ["Ada", "Ben", "Cleo", "Dara", "Emil", "Faye", "Gus", "Hana", "Ivo", "Jun", "Kemi", "Lars", "Mira",
         "Nils", "Olga", "Pia", "Quin", "Rosa", "Sven", "Tara", "Udo", "Vera", "Wim", "Xena", "Yuri", "Zoe"]
LAST = ["Moreau", "Okafor", "Lindqvist", "Tanaka", "Novak", "Haddad", "Ferreira", "Kowalski", "Brennan",
        "Santos", "Weber", "Ivanova", "Nakamura", "Dubois", "Rossi", "Jensen", "Kaya", "Murphy", "Silva", "Vogel"]
CITIES = ["Lyon", "Lagos", "Oslo", "Kyoto", "Prague", "Beirut", "Porto", "Krakow", "Dublin", "Recife",
          "Bremen", "Kazan", "Osaka", "Ghent", "Turin", "Aarhus", "Izmir", "Cork", "Quito", "Graz"]
COUNT = 400  # 320 train, 80 held out
HELD_OUT = 80
SEED = 13


def example(rng: random.Random) -> dict:
    first, last, city = rng.choice(FIRST), rng.choice(LAST), rng.choice(CITIES)
    year = rng.randrange(1801, 2000)
    return {"prompt": f"name: {first} {last} | born: {year} | city: {city}\n=>",
            "target": f" {last}, {first} ({year}, {city})\n"}


def examples() -> list[dict]:
    rng = random.Random(SEED)
    rows, seen = [], set()
    while len(rows) < COUNT:
        row = example(rng)
        if row["prompt"] in seen:  # held-out prompts never appear in training
            continue
        seen.add(row["prompt"])
        rows.append({**row, "split": "train" if len(rows) < COUNT - HELD_OUT else "held_out"})
    return rows


def text() -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in examples())


if __name__ == "__main__":
    out = Path(__file__).with_name("text_task.jsonl")
    out.write_text(text())
    print(f"wrote {out} ({COUNT} examples, {HELD_OUT} held out)")
