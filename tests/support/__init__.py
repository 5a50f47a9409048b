"""Helpers shared by the test tiers: real servers started on loopback."""
