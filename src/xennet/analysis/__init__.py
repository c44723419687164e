"""Analyses that run the policies on layouts without a world: ``xennet layout`` and ``xennet report``."""
