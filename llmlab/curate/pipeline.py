"""A streaming curation pipeline: stages applied to one document at a time, every drop counted,
sharded across processes, resumable after a kill.

A stage is a function ``Doc -> Doc | str``: the (possibly changed) document to pass on, or the
reason it is dropped. :func:`run` chains stages over any iterable of documents lazily (one
document in memory at a time; the dedup stages keep only hashes), and counts in ``stats`` every
drop by ``"stage: reason"``. Bad input is a counted skip, never a crash mid-run: a stage that
raises ``ValueError`` or ``UnicodeError`` on a document (undecodable bytes, a page over the size
limit) drops it as ``"stage: error"``; an empty document is dropped as ``"empty"``.

:func:`run_sharded` is the file-in/file-out form for many shards on one machine: each shard is
processed by a worker process into ``<out>/<shard>``, written to a temporary name and renamed
when complete, then marked done in ``<out>/.done/``. A killed run, started again, skips the
finished shards and redoes the unfinished ones from scratch, so no document is written twice —
datatrove's completion files do the same. On a cluster, the same stages run as datatrove
``PipelineStep``s under its Slurm or Ray executor (:mod:`llmlab.curate.datatrove_steps`).
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from llmlab.curate.document import Doc, read_docs, write_docs

StageFn = Callable[[Doc], "Doc | str"]


@dataclass
class Stage:
    """A named step of the pipeline."""

    name: str
    fn: StageFn


def run(docs: Iterable[Doc], stages: Sequence[Stage], stats: Counter | None = None) -> Iterator[Doc]:
    """Documents that pass every stage, lazily; ``stats`` counts ``"read"``, ``"kept"`` and each
    drop as ``"stage: reason"``."""
    stats = Counter() if stats is None else stats
    for doc in docs:
        stats["read"] += 1
        if not doc.text or not doc.text.strip():
            stats["empty"] += 1
            continue
        for stage in stages:
            try:
                out = stage.fn(doc)
            except (ValueError, UnicodeError) as err:
                stats[f"{stage.name}: error"] += 1
                doc.meta.setdefault("errors", []).append(f"{stage.name}: {err}")
                break
            if isinstance(out, str):
                stats[f"{stage.name}: {out}"] += 1
                break
            doc = out
        else:
            stats["kept"] += 1
            yield doc


def _shard_worker(args: tuple[str, str, Callable[[], Sequence[Stage]]]) -> dict:
    src, out_dir, make_stages = args
    src_path, out = Path(src), Path(out_dir)
    stats: Counter = Counter()
    tmp = out / f".tmp-{src_path.name}"  # keeps the suffix: .gz is written gzipped
    write_docs(tmp, run(read_docs(src_path), make_stages(), stats))
    os.replace(tmp, out / src_path.name)  # atomic: a shard file is whole or absent
    (out / ".done" / src_path.name).write_text(json.dumps(stats))
    return dict(stats)


def run_sharded(shards: Sequence[str | Path], out_dir: str | Path,
                make_stages: Callable[[], Sequence[Stage]], workers: int = 2) -> dict[str, dict]:
    """Process each shard file into ``out_dir`` with the stages ``make_stages()`` builds (a
    top-level function, so worker processes can rebuild them; each shard gets fresh stages, so
    dedup is per shard). Finished shards are skipped; returns each shard's stats."""
    out = Path(out_dir)
    (out / ".done").mkdir(parents=True, exist_ok=True)
    done = {p.name: json.loads(p.read_text()) for p in (out / ".done").iterdir()}
    todo = [str(s) for s in shards if Path(s).name not in done]
    jobs = [(s, str(out), make_stages) for s in todo]
    if workers <= 1 or len(jobs) <= 1:
        results = [_shard_worker(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_shard_worker, jobs))
    done.update({Path(s).name: r for s, r in zip(todo, results)})
    return {Path(s).name: done[Path(s).name] for s in shards}
