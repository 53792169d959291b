"""Finding model weights: explicit paths, the Hugging Face cache, or a download.

A weights reference is one of
- a local file or folder (`sam_vit_h_4b8939.pth`, `./my-sam/`, `ram_epoch12.pth`);
- a Hugging Face model id (`facebook/sam-vit-huge`), resolved to a cached snapshot folder;
- a Hugging Face file reference `hf://[models/|spaces/|datasets/]OWNER/REPO/PATH/IN/REPO`, for
  files published outside a model repository's usual layout (RAM's head lives in a Space).

The cache is tried first, so a machine that downloaded the weights once works offline. When the
weights are neither on disk nor downloadable, `WeightsNotFoundError` says which files are needed,
where to get them, and which flag or environment variable points at them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from relate_anything.errors import WeightsNotFoundError

# Files a transformers model folder needs: config, safetensors weights, preprocessing and
# tokenizer files (CLIP's vocab/merges, SigLIP's sentencepiece model). Pickled *.bin weights are
# deliberately not fetched.
_HUB_MODEL_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
]


@dataclass(frozen=True)
class WeightsKind:
    """One kind of weights: its name (for messages), CLI flag, environment variable, default
    reference, and where to get it."""

    name: str
    flag: str
    env_var: str
    default: str
    where_to_get: str

    def reference(self, given: str | Path | None = None) -> str:
        """The reference to use: `given`, else the environment variable if set, else the default."""
        return str(given) if given is not None and str(given) else os.environ.get(self.env_var) or self.default


SAM_WEIGHTS = WeightsKind(
    name="SAM",
    flag="--sam",
    env_var="RELATE_ANYTHING_SAM",
    default="facebook/sam-vit-huge",
    where_to_get=(
        "a transformers folder (config.json + model.safetensors) from https://huggingface.co/facebook/sam-vit-huge "
        "(or sam-vit-large / sam-vit-base), or an original checkpoint file sam_vit_h_4b8939.pth / "
        "sam_vit_l_0b3195.pth / sam_vit_b_01ec64.pth from https://github.com/facebookresearch/segment-anything; "
        "or a SAM-HQ or SAM 2 transformers folder, with a relation head distilled for it (relate-anything distill)"
    ),
)
RAM_WEIGHTS = WeightsKind(
    name="RAM relation head",
    flag="--ram",
    env_var="RELATE_ANYTHING_RAM",
    # RAM's authors publish ram_epoch12.pth with their demo, in this Hugging Face Space.
    default="hf://spaces/mmlab-ntu/relate-anything-model/checkpoints/ram_epoch12.pth",
    where_to_get=(
        "ram_epoch12.pth, published by the Relate-Anything-Model authors with their demo "
        "(https://huggingface.co/spaces/mmlab-ntu/relate-anything-model, file checkpoints/ram_epoch12.pth; "
        "see https://github.com/Luodian/RelateAnything), or a .safetensors head saved by relate-anything"
    ),
)
LABELER_WEIGHTS = WeightsKind(
    name="labeler (CLIP/SigLIP)",
    flag="--labeler",
    env_var="RELATE_ANYTHING_LABELER",
    default="openai/clip-vit-base-patch32",
    where_to_get=(
        "a transformers CLIP or SigLIP folder (config.json, model.safetensors and the tokenizer files), e.g. "
        "https://huggingface.co/openai/clip-vit-base-patch32, openai/clip-vit-large-patch14 or "
        "google/siglip-base-patch16-224, saved with save_pretrained"
    ),
)
DETECTOR_WEIGHTS = WeightsKind(
    name="detector (OWLv2)",
    flag="--detector",
    env_var="RELATE_ANYTHING_DETECTOR",
    default="google/owlv2-base-patch16-ensemble",
    where_to_get=(
        "a transformers OWLv2 folder (config.json, model.safetensors and the tokenizer files), e.g. "
        "https://huggingface.co/google/owlv2-base-patch16-ensemble"
    ),
)
SEGGPT_WEIGHTS = WeightsKind(
    name="SegGPT",
    flag="--seggpt",
    env_var="RELATE_ANYTHING_SEGGPT",
    default="BAAI/seggpt-vit-large",
    where_to_get=(
        "a transformers SegGPT folder (config.json + model.safetensors) from "
        "https://huggingface.co/BAAI/seggpt-vit-large"
    ),
)
STUDENT_WEIGHTS = WeightsKind(
    name="student segmenter (SAM, SAM-HQ or SAM 2)",
    flag="--student-sam",
    env_var="RELATE_ANYTHING_STUDENT_SAM",
    default="facebook/sam-vit-base",
    where_to_get=(
        "a transformers folder (config.json + model.safetensors) of SAM (https://huggingface.co/facebook/sam-vit-base, "
        "-large, -huge), SAM-HQ (https://huggingface.co/syscv-community/sam-hq-vit-base, -large, -huge) or SAM 2 "
        "(https://huggingface.co/facebook/sam2.1-hiera-tiny, -small, -base-plus, -large), or an original "
        "segment-anything checkpoint file such as sam_vit_b_01ec64.pth"
    ),
)
SAM2_WEIGHTS = WeightsKind(
    name="SAM 2",
    flag="--sam2",
    env_var="RELATE_ANYTHING_SAM2",
    # SAM 2.1 with the smallest image encoder (38.9M parameters), in transformers' format.
    default="facebook/sam2.1-hiera-tiny",
    where_to_get=(
        "a transformers SAM 2 video folder (config.json with model_type sam2_video + model.safetensors) from "
        "https://huggingface.co/facebook/sam2.1-hiera-tiny (or sam2.1-hiera-small, sam2.1-hiera-base-plus, "
        "sam2.1-hiera-large)"
    ),
)


def resolve(reference: str | Path, kind: WeightsKind) -> Path:
    """Turn a weights reference into a local file or folder, downloading only when needed.

    Raises:
        WeightsNotFoundError: the path does not exist, or the hub files are not cached and cannot
            be downloaded (offline, unknown repository, no network).
    """
    return resolve_all([(reference, kind)])[0]


def resolve_all(references: Sequence[tuple[str | Path, WeightsKind]]) -> list[Path]:
    """Local files or folders for several weights references; every one missing is named in one error.

    In three steps, so that a missing file is reported before anything is downloaded and a
    machine without network is told so at once:

    1. paths on disk, and hub references already in the Hugging Face cache (no network);
    2. if anything must be downloaded, one short connection test to the hub (or the proxy that
       leads there), at most `PROBE_SECONDS`: without an answer every download counts as missing
       (huggingface_hub would retry each one for half a minute first);
    3. the downloads, each with huggingface_hub's progress bar per file.

    Raises:
        WeightsNotFoundError: one message naming each reference that is neither on disk, nor
            cached, nor downloadable, with the flag and environment variable that point at it.
    """
    found: list[Path | None] = []
    missing: dict[int, WeightsNotFoundError] = {}
    for k, (reference, kind) in enumerate(references):
        try:
            found.append(_on_disk_or_cached(str(reference), kind))
        except WeightsNotFoundError as error:
            found.append(None)
            missing[k] = error
    to_download = [k for k, path in enumerate(found) if path is None and k not in missing]
    unreachable = hub_unreachable() if to_download else None
    for k in to_download:
        reference, kind = str(references[k][0]), references[k][1]
        if unreachable is not None:
            missing[k] = _not_found(kind, reference, f"not in the Hugging Face cache, and {unreachable}")
            continue
        try:
            found[k] = _download(reference, kind)
        except WeightsNotFoundError as error:
            missing[k] = error
    if missing:
        errors = [missing[k] for k in sorted(missing)]
        raise errors[0] if len(errors) == 1 else combined_error(errors)
    return [path for path in found if path is not None]


def combined_error(errors: Sequence[WeightsNotFoundError]) -> WeightsNotFoundError:
    """One error whose message lists every one of `errors` (each with its flag and variable)."""
    listed = "\n".join("- " + str(error).replace("\n", "\n  ") for error in errors)
    return WeightsNotFoundError(f"{len(errors)} models' weights are missing:\n{listed}")


def _on_disk_or_cached(text: str, kind: WeightsKind) -> Path | None:
    """The reference's file or folder when it is on disk or in the hub cache; None when it must
    be downloaded. Raises `WeightsNotFoundError` for a path that does not exist or a malformed
    hf:// reference."""
    from huggingface_hub import hf_hub_download, snapshot_download

    if text.startswith("hf://"):
        repo_id, filename, repo_type = _hub_file(text, kind)
        try:
            return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_files_only=True))
        except Exception:  # not cached
            return None
    path = Path(text).expanduser()
    if path.exists():
        return path
    if _looks_like_path(text):
        raise _not_found(kind, text, f"{text} does not exist")
    try:
        return Path(snapshot_download(text, allow_patterns=_HUB_MODEL_FILES, local_files_only=True))
    except Exception:  # not (fully) cached
        return None


def _download(text: str, kind: WeightsKind) -> Path:
    """Download a hub reference (a repository's model files, or one hf:// file) into the cache."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if text.startswith("hf://"):
            repo_id, filename, repo_type = _hub_file(text, kind)
            return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
        return Path(snapshot_download(text, allow_patterns=_HUB_MODEL_FILES))
    except Exception as error:
        raise _not_found(kind, text, _hub_reason(error)) from error


def _looks_like_path(text: str) -> bool:
    # A hub id is exactly OWNER/NAME (or NAME); anything else is meant as a path on disk.
    return (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or "\\" in text
        or text.endswith((".pth", ".pt", ".bin", ".safetensors"))
    )


def _hub_file(reference: str, kind: WeightsKind) -> tuple[str, str, str]:
    """(repo id, file path in the repository, repo type) of an hf:// reference."""
    parts = reference.removeprefix("hf://").split("/")
    repo_type = "model"
    if parts and parts[0] in ("models", "spaces", "datasets"):
        repo_type = parts.pop(0).removesuffix("s")
    if len(parts) < 3 or not all(parts):
        raise _not_found(kind, reference, "expected hf://[spaces/|datasets/]OWNER/REPO/PATH/TO/FILE")
    return "/".join(parts[:2]), "/".join(parts[2:]), repo_type


#: How long the connection test to the hub may take before the hub counts as out of reach (s).
PROBE_SECONDS = 2.0


def hub_unreachable(timeout: float = PROBE_SECONDS) -> str | None:
    """Why downloads from the Hugging Face hub cannot work here, or None when they may.

    HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) turns downloads off; otherwise one TCP connection to
    the hub endpoint ($HF_ENDPOINT, default https://huggingface.co), or to the proxy configured for
    it, must open within `timeout` seconds, name lookup included.
    """
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "downloads are off (HF_HUB_OFFLINE=1)"
    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname or "", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    target = f"{endpoint.scheme}://{host}" + (f":{endpoint.port}" if endpoint.port else "")
    proxy = None if urllib.request.proxy_bypass(host) else urllib.request.getproxies().get(endpoint.scheme)
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or "", parsed.port or 80
        target = f"the proxy {parsed.hostname}:{port} for {target}"
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    # A thread: the name lookup inside create_connection does not honour the timeout.
    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"{target} cannot be reached (no answer within {timeout:g} s)"
    if outcome[0] is not None:
        error = outcome[0]
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        return f"{target} cannot be reached ({reason})"
    return None


def _hub_reason(error: Exception) -> str:
    name = type(error).__name__
    if "Offline" in name:
        return "not in the Hugging Face cache, and downloads are off (HF_HUB_OFFLINE=1)"
    if "RepositoryNotFound" in name or ("EntryNotFound" in name and "Local" not in name):
        return f"not found on the Hugging Face hub ({name})"
    detail = (str(error).strip().splitlines() or [""])[0][:200]
    return f"not in the Hugging Face cache, and the download failed ({name}{': ' + detail if detail else ''})"


def _not_found(kind: WeightsKind, reference: str, reason: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{kind.name} weights {reference!r}: {reason}.\n"
        f"  Needed: {kind.where_to_get}.\n"
        f"  Point at them with {kind.flag} PATH (a file or folder) or the environment variable {kind.env_var}."
    )


def fingerprint(path: str | Path) -> str:
    """A fingerprint of the content of weights on disk: "sha256:HEX" of a file, or of a folder's
    model files (config, weights and tokenizer files: their relative names and contents).

    Equal for the same weights however they were given (a hub id and its cached snapshot folder,
    a relative and an absolute path, a copy), different as soon as one byte differs. Files in the
    Hugging Face cache are links to blobs named by their sha256 (large files), which is taken as
    it is instead of reading gigabytes again; other files are read (a few seconds for SAM ViT-H).
    """
    path = Path(path)
    if path.is_file():
        return f"sha256:{_file_sha256(path)}"
    files = sorted(
        file
        for file in path.rglob("*")
        if file.is_file()
        and not any(part.startswith(".") for part in file.relative_to(path).parts)
        and any(fnmatch.fnmatch(file.name, pattern) for pattern in _FINGERPRINTED_FILES)
    )
    if not files:
        raise WeightsNotFoundError(f"{path}: no model files in this folder (config.json, *.safetensors, ...)")
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path).as_posix()}\0{_file_sha256(file)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


# What a model folder's fingerprint covers: what transformers reads from it.
_FINGERPRINTED_FILES = [*_HUB_MODEL_FILES, "*.bin", "*.pth", "*.pt"]


def _file_sha256(file: Path) -> str:
    target = file.resolve()
    # huggingface_hub's cache: snapshots/<rev>/<name> -> blobs/<etag>, and a large (LFS) file's
    # etag is the sha256 of its content.
    if target.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", target.name):
        return target.name
    with open(target, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextmanager
def no_loading_bars() -> Iterator[None]:
    """Within: transformers draws no "Loading weights" bar for the models it loads (the front ends
    print one line per loaded model instead: `PipelineSpec.build(on_loaded=...)`). Download bars,
    huggingface_hub's, are not touched."""
    from transformers.utils import logging as transformers_logging

    set_hook = getattr(transformers_logging, "set_tqdm_hook", None)  # transformers >= 5
    if set_hook is None:
        yield
        return

    def hook(factory, args, kwargs):
        if kwargs.get("desc") == "Loading weights":
            return transformers_logging.EmptyTqdm(*args, **kwargs)
        return factory(*args, **kwargs) if previous is None else previous(factory, args, kwargs)

    previous = set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


def quiet_loading() -> None:
    """Silence transformers' load warnings and download bars in this process: for worker
    processes and actors, whose output nobody reads; the commands keep them visible."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
