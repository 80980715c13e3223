"""The user's own files for tests/test_user_path.py: three small tasks, each with its own column names.

    news/     train.csv, dev.csv      CSV classification: columns `article`, `topic` (5 topics),
                                      BBC News articles cut to their first 200 characters
    para/     train.jsonl, dev.jsonl  JSONL pairs: `first`, `second`, `relation` ("same" when the
                                      second is the same SST-2 sentence, "other" when another one)
    stars/    train.jsonl, dev.jsonl  JSONL regression: `review`, `stars` (1 + 4 * SST-2's label,
                                      a real number)

Built from $MINADAPT_DATA's bbc-news and sst2 folders, a few dozen rows each, so that a run of a
few steps on two cores takes seconds. Only the plumbing is under test, not accuracy.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path


def _sst2(data: Path, n: int, skip: int = 0) -> list[tuple[str, int]]:
    rows = []
    with open(data / "sst2" / "train.tsv", encoding="utf-8") as f:
        next(f)
        for i, line in enumerate(f):
            if i < skip:
                continue
            text, label = line.rstrip("\n").rsplit("\t", 1)
            rows.append((text.strip(), int(label)))
            if len(rows) == n:
                break
    return rows


def write_user_files(data: Path, root: Path, n_train: int = 48, n_dev: int = 16) -> dict[str, Path]:
    """Write the three tasks' files under `root`; returns {task folder name: folder}."""
    rng = random.Random(0)
    out = {}

    news = root / "news"
    news.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(data / "bbc-news" / f"{split}.csv", encoding="utf-8", newline="") as f:
            rows = [r for _, r in zip(range(n), csv.DictReader(f))]
        with open(news / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["article", "topic"])
            for r in rows:
                w.writerow([r["text"][:200], r["label"]])
    out["news"] = news

    sentences = [t for t, _ in _sst2(data, 2 * (n_train + n_dev))]
    para = root / "para"
    para.mkdir(parents=True, exist_ok=True)
    at = 0
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(para / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                first = sentences[at + i]
                same = i % 2 == 0
                second = first if same else sentences[at + n + i]
                f.write(json.dumps({"first": first, "second": second,
                                    "relation": "same" if same else "other"}) + "\n")
        at += 2 * n
    out["para"] = para

    stars = root / "stars"
    stars.mkdir(parents=True, exist_ok=True)
    rows = _sst2(data, n_train + n_dev, skip=1000)
    for split, part in (("train", rows[:n_train]), ("dev", rows[n_train:])):
        with open(stars / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for text, label in part:
                f.write(json.dumps({"review": text, "stars": round(1 + 4 * label + rng.uniform(-0.5, 0.5), 2)}) + "\n")
    out["stars"] = stars
    return out
