"""Steadfast's Kopf operator: reconciles ResearchAgent resources.

Named ``steadfast_operator`` (never ``operator``) so the standard library's
``operator`` module keeps importing everywhere.
"""
