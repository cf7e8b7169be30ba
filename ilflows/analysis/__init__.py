"""Validation and liquid properties: pure functions and thin jobs."""
