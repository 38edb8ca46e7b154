"""Pipelines: chain the stage commands (data, teacher, students, pseudo-labels, teacher cache,
evaluation) with fingerprints, resume, and a final report. ``sadpipe run`` / ``sadpipe demo``."""
from sadpipe.pipeline.runner import RunResult, run_pipeline
from sadpipe.pipeline.shipped import DEMO_PIPELINE, find_pipeline, shipped_pipelines
from sadpipe.pipeline.spec import Pipeline, load_pipeline
from sadpipe.pipeline.stage import Stage

__all__ = ["DEMO_PIPELINE", "Pipeline", "RunResult", "Stage", "find_pipeline", "load_pipeline",
           "run_pipeline", "shipped_pipelines"]
