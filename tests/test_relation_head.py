"""RAM relation head: published layout, parity with the authors' forward pass, padding,
checkpoint loading and errors, and triplet ranking."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import Tensor

from conftest import RAM_LAYOUT_FILE
from ram_factory import (
    LEGACY_POSITION_IDS_KEY,
    head_from,
    random_state_dict,
    tiny_config,
    write_published_pth,
    write_safetensors,
)
from relate_anything.errors import CheckpointError
from relate_anything.ram import RelationHead, RelationHeadConfig, infer_config, relate

LAYOUT_FILE = RAM_LAYOUT_FILE


# ---------------------------------------------------------------------------------------------
# The authors' forward pass, written out with plain tensor ops (no transformers), from a state
# dict in the published layout.


def _linear(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _layer_norm(x: Tensor, sd: dict[str, Tensor], name: str, eps: float) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _softmax(x: Tensor) -> Tensor:
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def _bert_layer(x: Tensor, sd: dict[str, Tensor], i: int, num_heads: int) -> Tensor:
    p = f"model.encoder.layer.{i}"
    n, hidden = x.shape
    d = hidden // num_heads

    def heads(t: Tensor) -> Tensor:  # [N, hidden] -> [heads, N, d]
        return t.reshape(n, num_heads, d).transpose(0, 1)

    q = heads(_linear(x, sd, f"{p}.attention.self.query"))
    k = heads(_linear(x, sd, f"{p}.attention.self.key"))
    v = heads(_linear(x, sd, f"{p}.attention.self.value"))
    attn = _softmax(q @ k.transpose(1, 2) / math.sqrt(d)) @ v
    attn = attn.transpose(0, 1).reshape(n, hidden)
    x = _layer_norm(x + _linear(attn, sd, f"{p}.attention.output.dense"), sd, f"{p}.attention.output.LayerNorm", 1e-12)
    h = _linear(x, sd, f"{p}.intermediate.dense")
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # BERT's exact GELU
    return _layer_norm(x + _linear(h, sd, f"{p}.output.dense"), sd, f"{p}.output.LayerNorm", 1e-12)


def reference_scores(sd: dict[str, Tensor], features: Tensor, config: RelationHeadConfig) -> Tensor:
    """[N, feature_dim] -> [num_predicates, N, N] logits, as RAM's RamModel computes them."""
    n = features.shape[0]
    x = _layer_norm(_linear(features, sd, "fc_input.0"), sd, "fc_input.1", 1e-5)
    # BERT embeddings: every position id is 1, token type 0.
    x = x + sd["model.embeddings.position_embeddings.weight"][1]
    x = x + sd["model.embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, sd, "model.embeddings.LayerNorm", 1e-12)
    for i in range(config.num_layers):
        x = _bert_layer(x, sd, i, config.num_heads)
    x = _layer_norm(_linear(x, sd, "fc_output.0"), sd, "fc_output.1", 1e-5)
    s = _linear(x, sd, "cls_sub").reshape(n, config.num_predicates, config.projection_dim).transpose(0, 1)
    o = _linear(x, sd, "cls_obj").reshape(n, config.num_predicates, config.projection_dim).transpose(0, 1)
    return s @ o.transpose(1, 2) / math.sqrt(config.projection_dim)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def full_head() -> RelationHead:
    return RelationHead().eval()


@pytest.fixture(scope="module")
def tiny() -> tuple[RelationHeadConfig, dict[str, Tensor]]:
    config = tiny_config()
    return config, random_state_dict(config, seed=0)


def _features(n: int, dim: int, seed: int = 1, batch: int | None = None) -> Tensor:
    shape = (n, dim) if batch is None else (batch, n, dim)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Published layout


def _published_layout() -> list[tuple[str, list[int], str]]:
    rows = []
    for line in LAYOUT_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            rows.append((key, [int(d) for d in shape.strip("[]").split(",")], dtype))
    return rows


def test_default_head_has_exactly_the_published_keys_shapes_dtypes(full_head):
    published = _published_layout()
    assert len(published) == 51
    ours = [(k, list(v.shape), str(v.dtype)) for k, v in full_head.state_dict().items()]
    assert ours == published
    assert infer_config(full_head.state_dict()) == RelationHeadConfig()


def test_legacy_position_ids_buffer_is_accepted(full_head, tiny, tmp_path):
    sd = dict(full_head.state_dict())
    sd[LEGACY_POSITION_IDS_KEY] = torch.arange(512).unsqueeze(0)
    full_head.load_state_dict(sd, strict=True)

    config, tiny_sd = tiny
    path = write_published_pth(tmp_path / "old.pth", tiny_sd, with_position_ids=True)
    features = _features(4, config.feature_dim)
    loaded = RelationHead.from_checkpoint(path)
    assert torch.equal(loaded.score(features), head_from(tiny_sd, config).score(features))


# ---------------------------------------------------------------------------------------------
# Forward pass


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_matches_reference_forward_tiny(tiny, attn_implementation):
    config, sd = tiny
    head = head_from(sd, config, attn_implementation)
    features = _features(6, config.feature_dim)
    with torch.no_grad():
        ours = head.score(features)
    assert ours.shape == (config.num_predicates, 6, 6)
    assert (ours - reference_scores(sd, features, config)).abs().max() <= 1e-5


def test_matches_reference_forward_full_size(full_head):
    sd = full_head.state_dict()
    features = _features(5, 256)
    with torch.no_grad():
        ours = full_head.score(features)
    assert ours.shape == (56, 5, 5)
    assert (ours - reference_scores(sd, features, RelationHeadConfig())).abs().max() <= 1e-5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_padding_does_not_change_real_scores(tiny, attn_implementation):
    config, sd = tiny
    head = head_from(sd, config, attn_implementation)
    lengths = [5, 2, 0]
    features = _features(5, config.feature_dim, batch=len(lengths))
    padding_mask = torch.arange(5) < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        batched = head(features, padding_mask)
        assert torch.isfinite(batched).all()  # even for the all-padding image
        for b, n in enumerate(lengths):
            alone = head.score(features[b, :n])
            torch.testing.assert_close(batched[b, :, :n, :n], alone, rtol=0, atol=1e-5)


def test_no_masks_gives_empty_scores(tiny):
    config, sd = tiny
    head = head_from(sd, config)
    assert head(torch.zeros(2, 0, config.feature_dim)).shape == (2, config.num_predicates, 0, 0)
    assert head.score(torch.zeros(0, config.feature_dim)).shape == (config.num_predicates, 0, 0)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_safetensors_round_trip(tiny, tmp_path):
    config, sd = tiny
    head = head_from(sd, config)
    head.save(tmp_path / "head.safetensors")
    # projection_dim 7 cannot be inferred from shapes: the config must come from the metadata.
    odd = RelationHeadConfig(
        feature_dim=8,
        hidden_size=32,
        num_heads=4,
        intermediate_size=16,
        num_predicates=5,
        projection_dim=7,
        vocab_size=3,
        max_position_embeddings=2,
    )
    odd_head = RelationHead(odd).eval()
    odd_head.save(tmp_path / "odd.safetensors")

    for original, name in ((head, "head"), (odd_head, "odd")):
        loaded = RelationHead.from_checkpoint(tmp_path / f"{name}.safetensors")
        assert loaded.config == original.config
        assert not loaded.training
        features = _features(4, original.config.feature_dim)
        with torch.no_grad():
            assert torch.equal(loaded.score(features), original.score(features))


def test_published_pth_loads_without_config(tiny, tmp_path):
    config, sd = tiny
    path = write_published_pth(tmp_path / "ram.pth", sd)
    loaded = RelationHead.from_checkpoint(path)
    assert loaded.config == config
    features = _features(3, config.feature_dim)
    with torch.no_grad():
        assert torch.equal(loaded.score(features), head_from(sd, config).score(features))


def _expect_checkpoint_error(path: Path, *fragments: str, config: RelationHeadConfig | None = None) -> None:
    with pytest.raises(CheckpointError) as info:
        RelationHead.from_checkpoint(path, config=config)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message


def test_wrong_keys_and_shapes_are_named(tiny, tmp_path):
    config, sd = tiny
    renamed = dict(sd)
    renamed["cls_subject.weight"] = renamed.pop("cls_obj.weight")
    path = write_published_pth(tmp_path / "renamed.pth", renamed)
    _expect_checkpoint_error(path, "missing keys: cls_obj.weight", "unexpected keys: cls_subject.weight")

    reshaped = dict(sd)
    reshaped["fc_output.0.weight"] = torch.zeros(3, 3)
    _expect_checkpoint_error(write_published_pth(tmp_path / "reshaped.pth", reshaped), "fc_output.0.weight [3, 3]")

    # A config that does not fit the file (here: a safetensors file read with another config).
    path = write_safetensors(tmp_path / "tiny.safetensors", sd, config)
    _expect_checkpoint_error(path, "wrong shapes", config=RelationHeadConfig())

    # Not a relation head at all: nothing to infer a config from.
    path = write_published_pth(tmp_path / "other.pth", {"weight": torch.zeros(2)})
    _expect_checkpoint_error(path, "missing fc_input.0.weight")


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    _expect_checkpoint_error(text, "not a readable RAM head checkpoint")

    fake = tmp_path / "notes.safetensors"
    fake.write_text("these are not weights either\n")
    _expect_checkpoint_error(fake, "not a readable safetensors file")

    not_a_dict = write_published_pth(tmp_path / "list.pth", [torch.zeros(2)])  # type: ignore[arg-type]
    _expect_checkpoint_error(not_a_dict, "does not hold a state dict")

    _expect_checkpoint_error(tmp_path / "missing.pth", "not found")


class _RunsCodeOnLoad:
    """Unpickling this calls os.system, i.e. runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_not_run(tmp_path):
    # The payload works: plain unpickling runs it (a harmless `touch`).
    control = tmp_path / "control_ran"
    pickle.loads(pickle.dumps(_RunsCodeOnLoad(control)))
    assert control.exists()

    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc_input.0.weight": _RunsCodeOnLoad(marker)}, f, protocol=2)
    torch.save({"fc_input.0.weight": _RunsCodeOnLoad(marker)}, tmp_path / "evil_zip.pth")

    _expect_checkpoint_error(path, "refused rather than unpickled")
    _expect_checkpoint_error(tmp_path / "evil_zip.pth", "refused rather than unpickled")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Ranking triplets


def _brute_force(scores: Tensor, subject: int | None = None) -> list[tuple[int, int, int, float]]:
    num_predicates, n, _ = scores.shape
    triplets = []
    for r in range(num_predicates):
        for i in range(n):
            for j in range(n):
                if i != j and subject in (None, i):
                    triplets.append((i, r, j, torch.sigmoid(scores[r, i, j]).item()))
    return sorted(triplets, key=lambda t: -t[3])


def test_relate_matches_brute_force():
    scores = torch.randn(4, 5, 5, generator=torch.Generator().manual_seed(3))
    for subject in (None, 0, 3):
        expected = _brute_force(scores, subject)
        ranked = relate(scores, top_k=None, subject=subject)
        assert len(ranked) == len(expected) == 4 * 4 * (5 if subject is None else 1)
        got = ranked.tolist()
        assert [t[:3] for t in got] == [t[:3] for t in expected]
        assert [t[3] for t in got] == pytest.approx([t[3] for t in expected])


def test_relate_top_k_order_and_self_pairs():
    scores = torch.randn(56, 7, 7, generator=torch.Generator().manual_seed(4))
    scores[:, torch.arange(7), torch.arange(7)] = 50.0  # self-pairs would win if not excluded
    ranked = relate(scores, top_k=10)
    assert len(ranked) == 10
    assert (ranked.subjects != ranked.objects).all()
    assert (ranked.scores[:-1] >= ranked.scores[1:]).all()
    # Scores are the sigmoid of the logits at the returned indices (relation-major flattening).
    assert torch.equal(ranked.scores, scores[ranked.predicates, ranked.subjects, ranked.objects].sigmoid())

    assert len(relate(scores, top_k=10_000)) == 56 * 7 * 6  # clipped to the valid triplets
    mine = relate(scores, top_k=20, subject=2)
    assert len(mine) == 20 and (mine.subjects == 2).all() and (mine.objects != 2).all()
    assert len(relate(scores, top_k=0)) == 0


def test_relate_ranks_by_logit_where_sigmoid_saturates():
    scores = torch.full((2, 3, 3), -5.0)
    scores[1, 0, 2], scores[0, 2, 1] = 40.0, 30.0  # both have sigmoid exactly 1.0 in float32
    ranked = relate(scores, top_k=2)
    assert ranked.tolist() == [(0, 1, 2, 1.0), (2, 0, 1, 1.0)]


@pytest.mark.parametrize("n", [0, 1])
def test_relate_with_too_few_masks_is_empty(n):
    ranked = relate(torch.randn(56, n, n), top_k=100)
    assert len(ranked) == 0 and ranked.tolist() == []


def test_relate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="subject 5"):
        relate(torch.randn(3, 4, 4), subject=5)
    with pytest.raises(ValueError, match="num_predicates, N, N"):
        relate(torch.randn(1, 3, 4, 4))


def _jpeg_prefix(path: Path) -> None:
    from conftest import IMAGES

    path.write_bytes((IMAGES / "dog.jpg").read_bytes()[:3000])


@pytest.mark.parametrize(
    "write, reason",
    [
        (lambda path: path.write_text("these are not weights\n"), "damaged"),
        (_jpeg_prefix, "Unsupported operand"),  # torch.load's weights-only unpickler stops on it
        (lambda path: path.write_bytes(b"PK\x03\x04 not a zip"), "not a ZIP archive"),
        (lambda path: path.write_bytes(b""), "empty or truncated"),
        (lambda path: torch.save({"w": _RunsCodeOnLoad(path.with_suffix(".ran"))}, path), "refused rather than"),
    ],
)
@pytest.mark.parametrize("model", ["SAM", "RAM"])
def test_a_bad_checkpoint_never_suggests_weights_only_false(tmp_path, write, reason, model):
    """PyTorch's message for a file it will not unpickle says to re-run with weights_only=False
    (which runs whatever code the file holds); ours names the file and the reason instead."""
    from relate_anything.sam import load_sam

    path = tmp_path / "model.pth"
    write(path)
    with pytest.raises(CheckpointError) as info:
        load_sam(path) if model == "SAM" else RelationHead.from_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and reason in message, message
    assert "weights_only" not in message and "trusted source" not in message
    assert not path.with_suffix(".ran").exists()
