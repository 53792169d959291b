"""What a batch job reads: the list of its images, and each image's pixels.

INPUT is one of

- a folder: every image file below it (by suffix, recursively), in sorted order;
- a glob (`photos/**/*.jpg`): every file it matches, sorted;
- a manifest, local or a URL: `.txt` (a path or URL a line; blank lines and `#` comments
  skipped), `.csv`/`.tsv` (the column named path, url, file, image or uri, else the first one), or
  `.jsonl` (a JSON string a line, or an object with one of those keys);
- a single image file or URL.

Each image is an `InputItem`: `file`, its identity (the path or URL as given, relative paths
normalised; for a folder, the path inside the folder), which becomes the scene graph's
`image.file` and decides what a restarted job has already done; and `location`, where to read it
(a relative path in a manifest is relative to the manifest's folder). The same image listed twice
counts once.

Locations may be local paths, http(s) URLs (read with the standard library), or any other
`scheme://` that fsspec knows (s3://, gs://, ...; needs fsspec and its plugin, e.g. s3fs).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import posixpath
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np

from relate_anything.errors import ImageError, RelateAnythingError, UsageError
from relate_anything.image_io import MAX_PIXELS, load_image, load_image_bytes

__all__ = ["IMAGE_SUFFIXES", "InputError", "InputItem", "list_inputs", "load_input"]

#: File suffixes a folder input picks up (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_MANIFEST_SUFFIXES = frozenset({".txt", ".lst", ".csv", ".tsv", ".jsonl", ".ndjson"})
# Column names / JSON keys that hold an image's path or URL, in order of preference.
_LOCATION_KEYS = ("path", "url", "file", "image", "uri", "location")
#: Seconds to wait for a remote image or manifest before it counts as failed.
FETCH_TIMEOUT = 60.0


class InputError(UsageError):
    """INPUT is not a folder, glob, manifest or image that can be read, or it lists no image."""


class InputItem(NamedTuple):
    """One image of a job: `file` is its identity (and the graph's image.file), `location` where
    to read it (a local path or a URL)."""

    file: str
    location: str


def list_inputs(source: str | Path) -> list[InputItem]:
    """The images of INPUT `source` (folder, glob, manifest, or one image), each once, in a
    stable order. Raises `InputError` when there is nothing to read."""
    text = str(source)
    if _is_url(text):
        _check_scheme(text)
        items = (
            _manifest_items(text, _fetch(text).decode("utf-8-sig"), base=text)
            if _is_manifest(text)
            else [InputItem(text, text)]
        )
    elif any(char in text for char in "*?[") and not Path(text).exists():
        items = [InputItem(_normalised(p), p) for p in sorted(glob.glob(text, recursive=True)) if os.path.isfile(p)]
        if not items:
            raise InputError(f"{text}: the pattern matches no file")
    elif Path(text).is_dir():
        items = _folder_items(Path(text))
    elif Path(text).is_file():
        path = Path(text)
        if _is_manifest(text):
            try:
                content = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"{path}: cannot read the manifest ({error})") from error
            items = _manifest_items(text, content, base=str(path.parent))
        else:
            items = [InputItem(_normalised(text), text)]
    else:
        raise InputError(f"{text}: no such folder, file or matching files")
    first: dict[str, InputItem] = {}
    for item in items:
        first.setdefault(item.file, item)  # an image listed twice is one image
    unique = list(first.values())
    for scheme in {urllib.parse.urlsplit(item.location).scheme for item in unique if _is_url(item.location)}:
        _check_scheme(f"{scheme}://")
    return unique


def load_input(location: str, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The RGB uint8 [H, W, 3] pixels at `location` (path or URL); `ImageError` if they cannot be
    fetched or decoded."""
    if _is_url(location):
        return load_image_bytes(_fetch(location, error=ImageError), name=location, max_pixels=max_pixels)
    return load_image(location, max_pixels=max_pixels)


def _folder_items(folder: Path) -> list[InputItem]:
    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return [InputItem(name, str(folder / name)) for name in files]


def _is_manifest(name: str) -> bool:
    path = urllib.parse.urlsplit(name).path if _is_url(name) else name
    return posixpath.splitext(path)[1].lower() in _MANIFEST_SUFFIXES


def _manifest_items(name: str, content: str, *, base: str) -> list[InputItem]:
    """Entries of a manifest `name` with text `content`; relative entries are relative to `base`."""
    suffix = posixpath.splitext(urllib.parse.urlsplit(name).path if _is_url(name) else name)[1].lower()
    if suffix in (".csv", ".tsv"):
        entries = _csv_entries(name, content, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        entries = _jsonl_entries(name, content)
    else:
        entries = [line.strip() for line in content.splitlines()]
        entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if not entries:
        raise InputError(f"{name}: the manifest lists no image")
    return [_manifest_item(entry, base) for entry in entries]


def _manifest_item(entry: str, base: str) -> InputItem:
    if _is_url(entry):
        return InputItem(entry, entry)
    file = _normalised(entry)
    if os.path.isabs(file):
        return InputItem(file, file)
    location = urllib.parse.urljoin(base, file) if _is_url(base) else os.path.join(base, file)
    return InputItem(file, location)


def _csv_entries(name: str, content: str, *, delimiter: str) -> list[str]:
    rows = [row for row in csv.reader(io.StringIO(content), delimiter=delimiter) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(key) for key in _LOCATION_KEYS if key in header), None)
    if column is not None:
        rows = rows[1:]
    else:
        column = 0
    try:
        return [row[column].strip() for row in rows if row[column].strip()]
    except IndexError:
        raise InputError(f"{name}: a row has no column {column + 1}") from None


def _jsonl_entries(name: str, content: str) -> list[str]:
    entries = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{name}, line {number}: not JSON ({error})") from error
        if isinstance(value, dict):
            value = next((value[key] for key in _LOCATION_KEYS if isinstance(value.get(key), str)), None)
        if not isinstance(value, str):
            raise InputError(
                f"{name}, line {number}: expected a path string or an object with one of {', '.join(_LOCATION_KEYS)}"
            )
        entries.append(value.strip())
    return entries


def _normalised(path: str) -> str:
    """A relative or absolute path written one way: no `./`, no `a/../`, forward slashes."""
    return Path(os.path.normpath(path)).as_posix()


def _is_url(text: str) -> bool:
    scheme = urllib.parse.urlsplit(text).scheme
    return len(scheme) > 1 and "://" in text  # a Windows drive letter ("C:\\") is not a scheme


def _check_scheme(url: str) -> None:
    """Fail early, once, when a URL scheme needs fsspec (or its plugin) and it is missing."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("http", "https", "file"):
        return
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)
    except ImportError as error:
        raise InputError(
            f"{scheme}:// locations need fsspec and its {scheme} plugin (pip install fsspec s3fs / gcsfs / adlfs ...): {error}"
        ) from error
    except ValueError as error:
        raise InputError(f"{url}: unknown URL scheme {scheme!r}") from error


def _fetch(url: str, *, error: type[RelateAnythingError] = InputError) -> bytes:
    """The bytes at `url` (http(s) and file with the standard library, else fsspec)."""
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        if scheme in ("http", "https", "file"):
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
                return response.read()
        import fsspec

        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except urllib.error.HTTPError as failure:
        raise error(f"{url}: HTTP {failure.code} {failure.reason}") from failure
    except urllib.error.URLError as failure:
        raise error(f"{url}: cannot fetch ({failure.reason})") from failure
    except (OSError, ValueError) as failure:  # timeouts, connection resets, fsspec's FileNotFoundError
        raise error(f"{url}: cannot fetch ({type(failure).__name__}: {failure})") from failure
