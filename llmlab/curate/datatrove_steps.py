"""The pipeline's stages as datatrove ``PipelineStep``s, to run on a cluster.

datatrove (Hugging Face's engine behind FineWeb) runs a list of steps over sharded files with a
local, Slurm or Ray executor; each task reads its shards, streams documents through the steps and
writes its output, and a completion file per task makes a restarted job skip finished tasks.
:class:`LlmlabStep` wraps any :class:`~llmlab.curate.pipeline.Stage` as such a step: a stage that
drops a document counts it in datatrove's stats under ``dropped_<reason>``; a stage that changes
the text passes the change on. Stateful stages (dedup) then deduplicate within one task; across
tasks use datatrove's own multi-stage dedup (``MinhashDedupSignature`` ... ``MinhashDedupFilter``),
which shards the hashes to disk.

On one machine (tested in tests/curate/test_datatrove.py)::

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    steps = [JsonlReader("crawl/", text_key="text", id_key="id"), *datatrove_steps(tools),
             JsonlWriter("curated/")]
    LocalPipelineExecutor(steps, tasks=8, workers=2, logging_dir="logs/").run()

On a Slurm cluster, the same steps (one task per input shard; datatrove submits an array job and
resubmits only unfinished tasks when run again)::

    from datatrove.executor import SlurmPipelineExecutor
    SlurmPipelineExecutor(steps, tasks=1000, time="04:00:00", partition="cpu", cpus_per_task=2,
                          mem_per_cpu_gb=4, logging_dir="s3://bucket/logs/curate",
                          job_name="curate").run()

On Ray (``ray start --head`` on the head node, ``ray start --address=HEAD:6379`` on workers)::

    from datatrove.executor import RayPipelineExecutor
    RayPipelineExecutor(steps, tasks=1000, workers=200, logging_dir="logs/").run()

datatrove is not a dependency of llmlab: ``pip install datatrove`` (it comes with the
``parity`` extra). Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

from collections.abc import Sequence

from llmlab.curate.document import Doc
from llmlab.curate.pipeline import Stage
from llmlab.curate.stages import CurateTools, curate_stages


def _base():
    try:
        from datatrove.pipeline.base import PipelineStep
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("datatrove_steps needs datatrove: pip install datatrove") from err
    return PipelineStep


def LlmlabStep(stage: Stage):  # noqa: N802 - a class factory, named like the class it makes
    """A datatrove ``PipelineStep`` running ``stage`` on every document of a task."""
    base = _base()

    class _Step(base):
        name = f"llmlab {stage.name}"
        type = "🧹 - CURATE"

        def run(self, data, rank: int = 0, world_size: int = 1):
            for document in data:
                self.stat_update("total")
                doc = Doc(str(document.id), document.text, document.metadata)
                try:
                    out = stage.fn(doc)
                except (ValueError, UnicodeError):
                    out = "error"
                if isinstance(out, str):
                    self.stat_update("dropped", f"dropped_{out}")
                    continue
                document.text, document.metadata = out.text, out.meta
                self.stat_update("forwarded")
                yield document

    return _Step()


def datatrove_steps(tools: CurateTools) -> Sequence:
    """:func:`llmlab.curate.stages.curate`'s stages, in order, as datatrove steps."""
    return [LlmlabStep(s) for s in curate_stages(tools)]
