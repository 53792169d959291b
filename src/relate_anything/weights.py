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

import os
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
    text = str(reference)
    if text.startswith("hf://"):
        return _resolve_hub_file(text, kind)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if _looks_like_path(text):
        raise _not_found(kind, text, f"{text} does not exist")
    return _resolve_hub_repo(text, kind)


def _looks_like_path(text: str) -> bool:
    # A hub id is exactly OWNER/NAME (or NAME); anything else is meant as a path on disk.
    return (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or "\\" in text
        or text.endswith((".pth", ".pt", ".bin", ".safetensors"))
    )


def _resolve_hub_repo(repo_id: str, kind: WeightsKind) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_MODEL_FILES, local_files_only=True))
    except Exception:  # not (fully) cached: try the network below
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_MODEL_FILES))
    except Exception as error:
        raise _not_found(kind, repo_id, _hub_reason(error)) from error


def _resolve_hub_file(reference: str, kind: WeightsKind) -> Path:
    from huggingface_hub import hf_hub_download

    parts = reference.removeprefix("hf://").split("/")
    repo_type = "model"
    if parts and parts[0] in ("models", "spaces", "datasets"):
        repo_type = parts.pop(0).removesuffix("s")
    if len(parts) < 3 or not all(parts):
        raise _not_found(kind, reference, "expected hf://[spaces/|datasets/]OWNER/REPO/PATH/TO/FILE")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_files_only=True))
    except Exception:  # not cached: try the network below
        pass
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
    except Exception as error:
        raise _not_found(kind, reference, _hub_reason(error)) from error


def _hub_reason(error: Exception) -> str:
    name = type(error).__name__
    if "Offline" in name or os.environ.get("HF_HUB_OFFLINE") == "1":
        return "not in the Hugging Face cache, and downloads are off (HF_HUB_OFFLINE=1)"
    if "RepositoryNotFound" in name or ("EntryNotFound" in name and "Local" not in name):
        return f"not found on the Hugging Face hub ({name})"
    return f"not in the Hugging Face cache, and the download failed ({name})"


def _not_found(kind: WeightsKind, reference: str, reason: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{kind.name} weights {reference!r}: {reason}.\n"
        f"  Needed: {kind.where_to_get}.\n"
        f"  Point at them with {kind.flag} PATH (a file or folder) or the environment variable {kind.env_var}."
    )


def quiet_loading() -> None:
    """Silence transformers' load warnings and download bars in this process: for worker
    processes and actors, whose output nobody reads; the commands keep them visible."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
