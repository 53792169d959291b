"""Naming and finding segments by text (APE-style region–sentence alignment), and relation queries.

- `Vocabulary`: the names segments may get, each an independent prompt (PSG's 133 by default).
- `Labeler`: a CLIP/SigLIP model that names every segment of a `SceneGraph` in one matrix product.
- `find_segments`, `Detector`: find things by a phrase, among the segments or with OWLv2 boxes
  (which the pipeline gives SAM as prompts).
- `query`: keep the relations whose subject / predicate / object match text.

The model-backed parts (torch, transformers) load on first use.
"""

from relate_anything.naming.query import matches, query
from relate_anything.naming.vocabulary import (
    DEFAULT_TEMPLATES,
    Vocabulary,
    VocabularyEntry,
    VocabularyError,
    psg_readable_name,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "Detection",
    "Detector",
    "Labeler",
    "Vocabulary",
    "VocabularyEntry",
    "VocabularyError",
    "find_segments",
    "phrase_scores",
    "matches",
    "psg_readable_name",
    "query",
]

_LAZY = {
    "Labeler": "relate_anything.naming.labeler",
    "Detector": "relate_anything.naming.find",
    "Detection": "relate_anything.naming.find",
    "find_segments": "relate_anything.naming.find",
    "phrase_scores": "relate_anything.naming.find",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'relate_anything.naming' has no attribute {name!r}")
