"""Relation queries: keep the relations whose subject, predicate and object match text.

Matching is case-insensitive and by whole words: the query must appear in the name as a word or
a run of consecutive words. "dog" matches "dog" and "hot dog" but not "hotdog"; "man" does not
match "woman"; "on" matches the predicates "on", "standing on", "parked on" (but not "in front
of"); "dining table" matches "dining table" but not "table". Whitespace in queries is
normalised. A segment without a label never matches a text query; an int matches a segment id.
"""

from __future__ import annotations

import re
from dataclasses import replace

from relate_anything.scene_graph import SceneGraph

__all__ = ["matches", "query"]


def matches(query: str, name: str | None) -> bool:
    """Whether `query` occurs in `name` as whole words, ignoring case (see the module docstring)."""
    words = query.split()
    if name is None or not words:
        return False
    pattern = r"(?<!\w)" + r"\s+".join(re.escape(word) for word in words) + r"(?!\w)"
    return re.search(pattern, name, flags=re.IGNORECASE) is not None


def query(
    graph: SceneGraph,
    *,
    subject: str | int | None = None,
    predicate: str | None = None,
    object: str | int | None = None,  # noqa: A002 - the triplet's own word
) -> SceneGraph:
    """The graph with only the relations matching every given part (None matches anything).

    Args:
        graph: a scene graph (its segments need labels for text queries on subject/object).
        subject: text matched against the subject segment's label, or a segment id.
        predicate: text matched against the predicate name.
        object: text matched against the object segment's label, or a segment id.

    Returns:
        A copy of `graph` with every segment and the matching relations in their original order
        (so the relations stay ranked best first).

    Example:
        >>> query(graph, subject="person", predicate="on").relations
    """
    for name, value in (("subject", subject), ("predicate", predicate), ("object", object)):
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"{name} query is empty")
    labels = {segment.id: segment.label for segment in graph.segments}

    def segment_matches(wanted: str | int | None, segment_id: int) -> bool:
        if wanted is None:
            return True
        if isinstance(wanted, int):
            return segment_id == wanted
        return matches(wanted, labels[segment_id])

    relations = [
        relation
        for relation in graph.relations
        if segment_matches(subject, relation.subject)
        and segment_matches(object, relation.object)
        and (predicate is None or matches(predicate, relation.predicate))
    ]
    return replace(graph, relations=relations)
