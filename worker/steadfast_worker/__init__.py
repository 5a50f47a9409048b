"""Steadfast's durable research worker.

The package holds everything a Temporal worker process needs to run
``ResearchWorkflow``: the workflow, its activities, their configuration, the
cost model, metrics, the LLM and search simulators, and the ``steadfast``
command line that drives all of it.
"""

__version__ = "0.1.0"
