"""The contract between the Steadfast operator, its workers and every starter of runs.

The ResearchAgent spec and the worker configuration it maps to, the types that
cross the workflow boundary, ids, pricing, budget arithmetic and retry policies.
Both the operator and the worker import this package; it imports neither, nor any
LLM, database or mail client (import-linter checks it: ``make lint``).
"""

__version__ = "0.1.0"
"""The release: the distribution's version (pyproject reads it here) and the images' tag."""
