"""Shape of a RAM relation head."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any

from transformers import BertConfig

from relate_anything.errors import CheckpointError


@dataclass(frozen=True)
class RelationHeadConfig:
    """Shape of a RAM relation head. The defaults are the published `ram_epoch12.pth`.

    Args:
        feature_dim: size of one mask feature (SAM's mask-decoder token: 256).
        hidden_size: width of the transformer (bert-base: 768).
        num_layers: BERT encoder layers kept (the authors truncate bert-base to 2).
        num_heads: attention heads per layer.
        intermediate_size: width of each layer's feed-forward block.
        num_predicates: relation classes (PSG: 56).
        projection_dim: size of the per-predicate subject and object vectors.
        vocab_size: rows of BERT's (unused) word embeddings; kept so checkpoints load as published.
        max_position_embeddings: rows of BERT's position embeddings (only row 1 is used).
        type_vocab_size: rows of BERT's token-type embeddings (only row 0 is used).
        layer_norm_eps: epsilon of BERT's LayerNorms.
        fc_layer_norm_eps: epsilon of the LayerNorms after fc_input and fc_output (the authors use
            `nn.LayerNorm`'s default).
        dropout: BERT's hidden and attention dropout, active in training mode only.
        segmenter: the segmenter whose mask tokens the head was trained on, as given to the
            trainer (a hub id such as "facebook/sam-vit-base", or a folder name); None: not
            recorded (the published `ram_epoch12.pth`, trained on SAM ViT-H tokens, and heads saved
            before this field existed). Provenance only: it does not change the architecture, but
            `check_tokens` uses it to name both sides of a mismatch.
    """

    feature_dim: int = 256
    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 12
    intermediate_size: int = 3072
    num_predicates: int = 56
    projection_dim: int = 512
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    fc_layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    segmenter: str | None = None

    def __post_init__(self) -> None:
        if self.segmenter is not None and not (isinstance(self.segmenter, str) and self.segmenter):
            raise ValueError(f"segmenter must be a non-empty string or None, got {self.segmenter!r}")
        sizes = {k: v for k, v in asdict(self).items() if isinstance(v, int)}
        bad = [k for k, v in sizes.items() if v < 1]
        if bad:
            raise ValueError(f"RelationHeadConfig sizes must be positive, got { ({k: sizes[k] for k in bad}) }")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.max_position_embeddings < 2:
            # Every mask uses position id 1, so row 1 must exist.
            raise ValueError("max_position_embeddings must be at least 2")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RelationHeadConfig:
        """Inverse of `to_dict`; unknown keys raise `TypeError`. Dicts written before a field
        existed (e.g. `segmenter`) get its default."""
        return cls(**values)

    def check_tokens(
        self, *, feature_dim: int, segmenter: str | None = None, head: str = "the relation head"
    ) -> str | None:
        """Whether this head can score the mask tokens of `segmenter`.

        Args:
            feature_dim: the width of the segmenter's mask tokens (SAM's mask decoder: 256).
            segmenter: the segmenter's name (hub id or folder), for the messages.
            head: how to name the head in the messages (e.g. its file).

        Returns:
            None when the head fits; a warning when both sides name a segmenter and the names
            differ (last path component, case-insensitive) although the widths agree: the head
            runs, but on tokens it was not trained on.

        Raises:
            CheckpointError: the widths differ; the message names both segmenters and widths.
        """
        trained_on = self.segmenter or "a segmenter it does not record (RAM's published head: SAM ViT-H)"
        given = segmenter or "the segmenter"
        if feature_dim != self.feature_dim:
            raise CheckpointError(
                f"{head} was trained on {self.feature_dim}-d mask tokens of {trained_on}, but {given} gives "
                f"{feature_dim}-d tokens: use a head trained for {given} (e.g. one distilled from RAM with "
                "`relate-anything distill`), or the segmenter the head was trained for"
            )
        if self.segmenter is not None and segmenter is not None and _name(self.segmenter) != _name(segmenter):
            return (
                f"{head} was trained on mask tokens of {self.segmenter}, not of {segmenter}; it runs (both are "
                f"{feature_dim}-d) but its relations may be poor"
            )
        return None

    def bert_config(self, attn_implementation: str) -> BertConfig:
        """The transformers `BertConfig` of the encoder part."""
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act="gelu",
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            layer_norm_eps=self.layer_norm_eps,
            attn_implementation=attn_implementation,
        )


def _name(segmenter: str) -> str:
    """The last path component, lower case: "facebook/sam-vit-base" and "/models/SAM-ViT-Base/" give
    "sam-vit-base"."""
    return PurePath(segmenter.rstrip("/\\")).name.lower()
