"""Verifiers for artifacts made by other execution-authorization systems.

Each profile lives in its own module with its own canonicalization: nothing here
touches execauth's RFC 8785 path.
"""
