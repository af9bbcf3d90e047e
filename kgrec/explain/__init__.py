"""Explanations of recommendations: knowledge-graph paths from the user, and their storage in Neo4j."""

from kgrec.explain.paths import (
    REASON_KINDS,
    Reason,
    ReasonKind,
    RecommendationWrite,
    explain_paths,
    pick_reasons,
    write_recommendations,
    write_recommendations_batch,
)

__all__ = [
    "REASON_KINDS",
    "Reason",
    "ReasonKind",
    "RecommendationWrite",
    "explain_paths",
    "pick_reasons",
    "write_recommendations",
    "write_recommendations_batch",
]
