"""Reading and writing RAM relation-head weights.

Two formats:
- the authors' published `.pth` (e.g. `ram_epoch12.pth`): a plain state dict, no config. It is
  read with `torch.load(weights_only=True)`, so a pickle that would run code is refused, and the
  config is inferred from tensor shapes;
- our `.safetensors`: the same keys, with the config as JSON in the file's metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from relate_anything.errors import CheckpointError
from relate_anything.ram.config import RelationHeadConfig
from relate_anything.state_dicts import listed, mismatches, read_torch_file

if TYPE_CHECKING:
    from relate_anything.ram.head import RelationHead

# An older transformers stored this BertEmbeddings buffer in state dicts; newer ones register it
# as non-persistent. The head never reads it (it passes its own position ids), so it is dropped.
LEGACY_POSITION_IDS_KEY = "model.embeddings.position_ids"
CONFIG_METADATA_KEY = "relate_anything.relation_head_config"
_LAYER_KEY = re.compile(r"^model\.encoder\.layer\.(\d+)\.")


def read(path: str | Path) -> tuple[dict[str, Tensor], RelationHeadConfig | None]:
    """Read a state dict onto the CPU, and the config when the file stores one (safetensors
    written by `save`).

    Raises:
        CheckpointError: missing or unreadable file, or content other than a mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"RAM checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path), None


def _read_torch(path: Path) -> dict[str, Tensor]:
    # Weights-only unpickling: a pickle that would import or call anything (os.system, a class)
    # is refused before it runs; RAM's published ram_epoch12.pth is a plain state dict.
    obj = read_torch_file(path, what="RAM head checkpoint")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict (names to tensors) but a {type(obj).__name__}")
    bad = next((k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))), None)
    if bad is not None:
        raise CheckpointError(
            f"{path} does not hold a state dict (names to tensors): entry {bad!r} is a {type(obj[bad]).__name__}"
        )
    return obj


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], RelationHeadConfig | None]:
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state_dict = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    if CONFIG_METADATA_KEY not in metadata:
        return state_dict, None
    try:
        config = RelationHeadConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has an invalid relation-head config in its metadata: {exc}") from exc
    return state_dict, config


def infer_config(
    state_dict: dict[str, Tensor], path: str | Path = "<state dict>", *, projection_dim: int = 512, head_dim: int = 64
) -> RelationHeadConfig:
    """The config of a published-layout state dict, from its tensor shapes.

    The number of predicates and the projection size are only known as their product (the rows
    of `cls_sub.weight`), and the number of heads not at all: `projection_dim` and `head_dim`
    (BERT's 64) settle them.

    Raises:
        CheckpointError: keys needed to infer the config are missing or shapes don't divide.
    """
    needed = [
        "fc_input.0.weight",
        "cls_sub.weight",
        "model.embeddings.word_embeddings.weight",
        "model.embeddings.position_embeddings.weight",
        "model.embeddings.token_type_embeddings.weight",
        "model.encoder.layer.0.intermediate.dense.weight",
    ]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"{path} is not a RAM relation-head checkpoint: missing {listed(missing)} "
            f"({len(state_dict)} keys, e.g. {listed(sorted(state_dict))})"
        )
    not_matrices = [k for k in needed if state_dict[k].dim() != 2]
    if not_matrices:
        raise CheckpointError(
            f"{path}: wrong shape {', '.join(f'{k} {list(state_dict[k].shape)}' for k in not_matrices)}"
        )
    hidden, feature_dim = state_dict["fc_input.0.weight"].shape
    projected = state_dict["cls_sub.weight"].shape[0]
    if projected % projection_dim or hidden % head_dim:
        raise CheckpointError(
            f"{path}: cannot infer the config: cls_sub has {projected} rows (not a multiple of projection_dim "
            f"{projection_dim}) or hidden size {hidden} is not a multiple of head_dim {head_dim}; pass a config"
        )
    layers = {int(m.group(1)) for k in state_dict if (m := _LAYER_KEY.match(k))}
    return RelationHeadConfig(
        feature_dim=feature_dim,
        hidden_size=hidden,
        num_layers=max(layers) + 1,
        num_heads=hidden // head_dim,
        intermediate_size=state_dict["model.encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_predicates=projected // projection_dim,
        projection_dim=projection_dim,
        vocab_size=state_dict["model.embeddings.word_embeddings.weight"].shape[0],
        max_position_embeddings=state_dict["model.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state_dict["model.embeddings.token_type_embeddings.weight"].shape[0],
    )


def load_into(head: RelationHead, state_dict: dict[str, Tensor], path: str | Path = "<state dict>") -> None:
    """`head.load_state_dict(state_dict, strict=True)`, with a `CheckpointError` that names the
    file and the first missing, unexpected and mis-shaped keys."""
    expected = head.state_dict()
    given = {k: v for k, v in state_dict.items() if k != LEGACY_POSITION_IDS_KEY or k in expected}
    problems = mismatches(expected, given)
    if problems:
        raise CheckpointError(f"{path} does not fit the RAM relation head: " + "; ".join(problems))
    head.load_state_dict(given, strict=True)


def save(head: RelationHead, path: str | Path) -> None:
    """Write the head's weights as safetensors, with its config as JSON in the metadata."""
    metadata = {"format": "pt", CONFIG_METADATA_KEY: json.dumps(head.config.to_dict())}
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
