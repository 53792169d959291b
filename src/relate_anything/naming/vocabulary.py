"""Vocabularies: the names a labeler may give to segments, each with its own prompts.

As in APE, every category name or phrase is an independent prompt: its sentences (the name put
into a few fixed templates) are encoded separately and averaged into ONE sentence-level
embedding per entry, so a vocabulary of V entries is a [V, D] matrix regardless of how many
templates or words each entry has, and entries never compete inside one text encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from relate_anything import psg
from relate_anything.errors import UsageError

__all__ = ["DEFAULT_TEMPLATES", "Vocabulary", "VocabularyEntry", "VocabularyError", "psg_readable_name"]

#: Sentence templates every name is put into; their embeddings are averaged (prompt ensembling,
#: a short subset of CLIP's ImageNet templates that fits region crops).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a {} in the scene.",
    "there is a {} in the scene.",
)

# PSG names the mechanical rule below would get wrong; everything else is derived.
_READABLE_OVERRIDES = {
    "playingfield": "playing field",
    "window-blind": "window blind",
}
# Suffixes PSG (from COCO panoptic) uses to mark merged or catch-all stuff classes.
_DROPPED_PARTS = ("merged", "stuff", "other")


class VocabularyError(UsageError):
    """A vocabulary that is empty, unreadable, or has duplicate names."""


def psg_readable_name(name: str) -> str:
    """A PSG category name as a person would say it.

    "tree-merged" -> "tree", "sky-other-merged" -> "sky", "door-stuff" -> "door",
    "wall-brick" -> "brick wall", "floor-wood" -> "wood floor", "playingfield" -> "playing field";
    names without a dash ("dining table") are unchanged.
    """
    if name in _READABLE_OVERRIDES:
        return _READABLE_OVERRIDES[name]
    parts = [part for part in name.split("-") if part not in _DROPPED_PARTS]
    if len(parts) == 2:  # COCO's "base-material" stuff: wall-brick, floor-wood
        parts = [parts[1], parts[0]]
    return " ".join(parts)


@dataclass(frozen=True)
class VocabularyEntry:
    """One name a segment can get.

    Attributes:
        name: the label written into the scene graph ("tree", "dog", "red car").
        prompts: sentences whose embeddings are averaged into the entry's one text embedding.
        category_id: PSG's category id (0-132) when the entry is a PSG class, else None.
    """

    name: str
    prompts: tuple[str, ...]
    category_id: int | None = None

    @classmethod
    def from_name(
        cls, name: str, *, templates: Sequence[str] = DEFAULT_TEMPLATES, category_id: int | None = None
    ) -> VocabularyEntry:
        """An entry whose prompts are `name` put into each template ("a photo of a {}.")."""
        name = " ".join(name.split())
        if not name:
            raise VocabularyError("a vocabulary name is empty")
        if not templates:
            raise VocabularyError("at least one prompt template is needed")
        return cls(name=name, prompts=tuple(template.format(name) for template in templates), category_id=category_id)


@dataclass(frozen=True)
class Vocabulary:
    """An ordered, hashable set of entries (hashable so text embeddings can be cached per vocabulary).

    Example:
        >>> Vocabulary.from_names(["dog", "stick", "sand"]).names
        ('dog', 'stick', 'sand')
        >>> Vocabulary.psg().entries[116]
        VocabularyEntry(name='tree', prompts=(...), category_id=116)
    """

    entries: tuple[VocabularyEntry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        if not self.entries:
            raise VocabularyError('the vocabulary is empty: give at least one name (e.g. --vocab "dog,stick,sand")')
        names = [entry.name for entry in self.entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise VocabularyError(f"the vocabulary names {duplicates} more than once")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.entries)

    @classmethod
    def from_names(cls, names: Iterable[str], *, templates: Sequence[str] = DEFAULT_TEMPLATES) -> Vocabulary:
        """One entry per name (no category ids); duplicates after whitespace clean-up are an error."""
        return cls(tuple(VocabularyEntry.from_name(name, templates=templates) for name in names))

    @staticmethod
    @cache
    def psg() -> Vocabulary:
        """PSG's 133 categories with readable names ("tree" for "tree-merged"); entry i has category id i."""
        return Vocabulary(
            tuple(
                VocabularyEntry.from_name(psg_readable_name(name), category_id=index)
                for index, name in enumerate(psg.categories())
            )
        )

    @classmethod
    def parse(cls, text_or_path: str | Path, *, templates: Sequence[str] = DEFAULT_TEMPLATES) -> Vocabulary:
        """The CLI's `--vocab` value: a file with one name per line, or comma-separated names.

        A value that names an existing file is read (UTF-8; blank lines and lines starting with
        "#" are skipped); `"psg"` gives `Vocabulary.psg()`; anything else is split at commas,
        except a value that looks like a file (a Path, a .txt/.csv/.lst/.vocab name, or one
        starting with ".", "/" or "~") but does not exist, which is an error rather than a name.
        """
        text = str(text_or_path)
        path = Path(text).expanduser()
        looks_like_file = isinstance(text_or_path, Path) or (
            "," not in text
            and (path.suffix.lower() in (".txt", ".csv", ".lst", ".vocab") or text.strip().startswith((".", "/", "~")))
        )
        if looks_like_file or (text.strip() and "," not in text and path.is_file()):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise VocabularyError(f"cannot read vocabulary file {path}: {error}") from error
            names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            if not names:
                raise VocabularyError(f"vocabulary file {path} has no names (one name per line)")
            return cls.from_names(names, templates=templates)
        if text.strip().lower() == "psg" and templates == DEFAULT_TEMPLATES:
            return cls.psg()
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise VocabularyError(f"vocabulary {text!r} has no names: give comma-separated names or a file")
        return cls.from_names(names, templates=templates)
