"""The sample photos that ship with the package: for a first run without a photo at hand
(`relate-anything run --sample`) and for the web UI's sample list.

They live in `serving/samples/` (package data), with their sources and licences in SOURCES.md.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLES_DIR", "sample_photo", "sample_photos"]

SAMPLES_DIR = Path(__file__).parent / "serving" / "samples"
#: The photo `relate-anything run --sample` relates: RAM's own demo photo (a dog looking at a person holding its bowl).
DEFAULT_SAMPLE = "dog.jpg"
_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def sample_photo(name: str = DEFAULT_SAMPLE) -> Path:
    """The packaged sample photo called `name` (default: RAM's demo photo, dog.jpg)."""
    path = SAMPLES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no sample photo {name!r} in {SAMPLES_DIR}: the installation is incomplete")
    return path


def sample_photos(folder: str | Path | None = None) -> list[Path]:
    """The package's sample photos, then the JPEG/PNG/WebP files in `folder` (if given)."""
    photos = sorted(SAMPLES_DIR.glob("*.jpg"))
    if folder is not None:
        photos += sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in _PHOTO_SUFFIXES)
    return photos
