"""Steadfast's durable research worker.

The package holds everything a Temporal worker process needs to run
``ResearchWorkflow``: the workflow, its activities, the LLM client, error
classification, metrics and the connection to Temporal. What it shares with the
operator and the starters lives in :mod:`steadfast_contract`.
"""
