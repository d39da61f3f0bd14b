"""Enrichment: Describe calls after commit, coalesced, written version-guarded."""
