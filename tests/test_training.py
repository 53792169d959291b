"""Training the relation head: matching, the resumable feature cache, losses, and proof it learns."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ram_factory import TRAINABLE_HEAD
from relate_anything import psg
from relate_anything.errors import RelateAnythingError
from relate_anything.masks import mask_ious
from relate_anything.ram import RelationHead
from relate_anything.sam import SegmentationResult
from relate_anything.scene_graph import Relation, SceneGraph
from relate_anything.training import (
    FeatureCache,
    ImageRecord,
    ShardWriter,
    TrainConfig,
    collect,
    make_synthetic_feature_cache,
    match_masks,
    rewrite_relations,
    train,
)
from relate_anything.training import cache as cache_module
from relate_anything.training.metrics import frequency_baseline_logits, mean_recall, triplet_recall
from relate_anything.training.trainer import multilabel_categorical_crossentropy, relation_loss

TINY_HEAD = TRAINABLE_HEAD


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        epochs=2,
        lr=3e-3,
        lr_milestones=(1,),
        batch_size=8,
        head=TINY_HEAD,
        ema_decay=0.99,
        max_grad_norm=None,
        log=False,
    )
    return TrainConfig(**(values | overrides))


# ---------------------------------------------------------------------------------------------
# Matching


def _boxes(size: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        masks[k, y0:y1, x0:x1] = True
    return masks


def test_mask_ious_equal_brute_force():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(5, 17, 13, generator=gen) > 0.5
    b = torch.rand(4, 17, 13, generator=gen) > 0.7
    b[0] = False  # an empty mask
    expected = torch.tensor(
        [[float((x & y).sum()) / max(float((x | y).sum()), 1) for y in b] for x in a], dtype=torch.float64
    )
    torch.testing.assert_close(mask_ious(a, b), expected)


def test_match_masks_keeps_mutual_best_matches_above_threshold():
    gt = _boxes(20, [(0, 0, 10, 10), (10, 10, 20, 20), (0, 10, 10, 20)])
    sam = _boxes(
        20,
        [
            (0, 0, 10, 9),  # IoU 0.9 with gt 0: the best for gt 0
            (0, 0, 10, 8),  # IoU 0.8 with gt 0: above 0.6 but not gt 0's best -> unmatched
            (10, 10, 20, 16),  # IoU 0.6 with gt 1: not > 0.6 -> unmatched
            (0, 10, 10, 17),  # IoU 0.7 with gt 2
        ],
    )
    match = match_masks(sam, gt)
    assert match.sam_to_gt.tolist() == [0, -1, -1, 2]
    assert match.gt_to_sam.tolist() == [0, -1, 3]
    assert match.num_matched == 2
    assert match_masks(sam, gt[:0]).sam_to_gt.tolist() == [-1] * 4


def test_rewrite_relations_drops_unmatched_and_duplicates():
    gt_to_sam = np.array([3, -1, 0])
    relations = np.array([[0, 2, 5], [2, 0, 7], [0, 1, 1], [0, 2, 5], [1, 2, 4]])
    assert rewrite_relations(relations, gt_to_sam).tolist() == [[0, 3, 7], [3, 0, 5]]
    assert rewrite_relations(np.zeros((0, 3)), gt_to_sam).shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# Losses and metrics


def _ram_mlce(y_true, y_pred):
    """RAM's (Su Jianlin's) multilabel_categorical_crossentropy over the last dim, as published."""
    y_pred = (1 - 2 * y_true) * y_pred
    y_neg = y_pred - y_true * 1e12
    y_pos = y_pred - (1 - y_true) * 1e12
    zeros = torch.zeros_like(y_pred[..., :1])
    return torch.logsumexp(torch.cat([y_neg, zeros], -1), -1) + torch.logsumexp(torch.cat([y_pos, zeros], -1), -1)


def test_multilabel_ce_equals_the_published_formula_over_valid_entries():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen) * 3
    targets = (torch.rand(2, 3, 4, 4, generator=gen) > 0.8).float()
    valid = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    valid[1, :, 3, :] = valid[1, :, :, 3] = False  # image 1 has 3 masks
    expected = []
    for b in range(2):
        keep = valid[b].expand(3, 4, 4)
        expected.append(_ram_mlce(targets[b][keep], logits[b][keep]))
    torch.testing.assert_close(
        multilabel_categorical_crossentropy(logits, targets, valid), torch.stack(expected).mean()
    )
    # Entries outside `valid` do not matter, whatever their logits and targets.
    changed = logits.clone()
    changed[1, :, 3] = 1e4
    for kind in ("multi_label_ce", "bce"):
        torch.testing.assert_close(
            relation_loss(changed, targets, valid, kind), relation_loss(logits, targets, valid, kind)
        )


def test_multilabel_ce_soft_targets_have_the_documented_optimum():
    s = torch.zeros(1, 1, 1, 2, requires_grad=True)
    t = torch.tensor([0.8, 0.8]).view(1, 1, 1, 2)
    valid = torch.tensor([[[[True, False]]]])
    opt = torch.optim.SGD([s], lr=0.5)
    for _ in range(500):
        opt.zero_grad()
        multilabel_categorical_crossentropy(s, t, valid).backward()
        opt.step()
    assert s[0, 0, 0, 0].item() == pytest.approx(0.5 * np.log(0.8 / 0.2), abs=1e-3)


def test_triplet_recall_counts_hits_among_top_k():
    logits = torch.full((2, 3, 3), -5.0)
    logits[1, 0, 2] = 5.0  # (0, pred 1, 2) ranked first
    logits[0, 1, 1] = 9.0  # a self-pair: never ranked
    relations = torch.tensor([[0, 2, 1], [2, 1, 0]])
    recall = triplet_recall(logits, relations, ks=(1, 12))
    assert recall == {1: 0.5, 12: 1.0}
    assert triplet_recall(logits, torch.zeros(0, 3, dtype=torch.long)) is None


# ---------------------------------------------------------------------------------------------
# Feature cache and collection


def _record(image_id: str, n: int, seed: int) -> ImageRecord:
    rng = np.random.default_rng(seed)
    return ImageRecord(
        image_id=image_id,
        features=rng.standard_normal((n, 8)).astype(np.float32),
        relations=np.array([[0, n - 1, seed % 56]]),
    )


def test_cache_round_trip_and_uncommitted_shard_is_invisible(tmp_path, monkeypatch):
    with ShardWriter(tmp_path, shard_size=2, feature_dtype=torch.float32) as writer:
        for k in range(3):
            writer.add(_record(f"img{k}", 3 + k, k))
    cache = FeatureCache(tmp_path)
    assert [c.image_id for c in cache] == ["img0", "img1", "img2"]
    image = cache[2]
    torch.testing.assert_close(image.features, torch.from_numpy(_record("img2", 5, 2).features))
    assert image.relations.tolist() == [[0, 4, 2]] and image.num_masks == 5
    assert cache.masks(0) is None

    # A crash after the data files but before the index is moved into place: nothing is visible.
    real_replace = os.replace

    def crash_on_index(src, dst):
        if str(dst).endswith("000002.json"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_index)
    writer = ShardWriter(tmp_path, shard_size=1)
    with pytest.raises(KeyboardInterrupt):
        writer.add(_record("img3", 2, 3))
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(FeatureCache(tmp_path)) == 3
    assert cache_module.committed_image_ids(tmp_path) == {"img0", "img1", "img2"}
    with ShardWriter(tmp_path, shard_size=1) as writer:  # the rerun overwrites the leftovers
        writer.add(_record("img3", 2, 3))
    assert FeatureCache(tmp_path).image_ids() == ["img0", "img1", "img2", "img3"]
    assert not list(tmp_path.glob("*.tmp"))


class _GroundTruth:
    """A tiny in-memory ground-truth dataset with the `PsgDataset` interface `collect` uses."""

    def __init__(self, root: Path, images: int) -> None:
        names = psg.predicates()
        self.graphs, self.paths = [], []
        rng = np.random.default_rng(0)
        for k in range(images):
            masks = _boxes(24, [(0, 0, 12, 24), (12, 0, 24, 12), (12, 12, 24, 24)]).numpy()
            graph = SceneGraph.from_masks(masks, np.ones(3), file=f"img{k}.png")
            relations = (
                []
                if k == 1
                else [  # image 1 has none: skipped
                    Relation(subject=0, predicate=names[k % 56], predicate_id=k % 56, object=1, score=1.0),
                    Relation(subject=2, predicate=names[3], predicate_id=3, object=0, score=1.0),
                ]
            )
            self.graphs.append(dataclasses.replace(graph.with_relations(relations), image_id=f"id{k}"))
            path = root / f"img{k}.png"
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> SceneGraph:
        return self.graphs[index]

    def image_path(self, index: int) -> Path:
        return self.paths[index]


class _FakeSegmenter:
    """Returns ground-truth-like masks (the third GT mask is missed; one extra mask), and raises
    after `fail_after` images to simulate a crash."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after, self.calls = fail_after, 0

    def set_image(self, pixels: np.ndarray) -> None:
        self.seed = int(pixels.sum())

    def segment_everything(self) -> SegmentationResult:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        masks = _boxes(24, [(12, 0, 24, 12), (0, 0, 12, 23), (0, 0, 24, 24)])
        features = torch.randn(3, 256, generator=torch.Generator().manual_seed(self.seed))
        return SegmentationResult(
            masks=masks,
            iou_predictions=torch.ones(3),
            stability_scores=torch.ones(3),
            boxes=torch.zeros(3, 4),
            features=features,
        )


def test_collect_resumes_after_a_crash_with_every_image_exactly_once(tmp_path):
    dataset = _GroundTruth(tmp_path, images=7)
    out = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect(dataset, _FakeSegmenter(fail_after=4), out, shard_size=2)
    assert cache_module.committed_image_ids(out) == {"id0", "id2", "id3", "id4"}  # 2 shards of 2
    stats = collect(dataset, _FakeSegmenter(), out, shard_size=2)
    assert (stats.already_done, stats.images, stats.without_relations) == (4, 2, 1)
    cache = FeatureCache(out)
    assert sorted(cache.image_ids()) == ["id0", "id2", "id3", "id4", "id5", "id6"]
    # GT 0 -> SAM 1 (IoU 23/24), GT 1 -> SAM 0; GT 2 unmatched, so "2 <pred 3> 0" is dropped.
    assert stats.kept_fraction == 0.5 and stats.matched_fraction == pytest.approx(2 / 3)
    for index, image in enumerate(cache):
        k = int(image.image_id[2:])
        assert image.relations.tolist() == [[1, 0, k % 56]]
        assert cache.matched_gt(index).tolist() == [1, 0, -1]
        masks = cache.masks(index)
        assert masks.shape == (3, 24, 24) and masks[0, 12:, :12].all()


def test_collect_splits_images_by_rank(tmp_path):
    dataset = _GroundTruth(tmp_path, images=5)
    for rank in range(2):
        collect(dataset, _FakeSegmenter(), tmp_path / "c", rank=rank, world_size=2, shard_size=10)
    assert sorted(FeatureCache(tmp_path / "c").image_ids()) == ["id0", "id2", "id3", "id4"]
    assert {p.name[:8] for p in (tmp_path / "c").glob("*.json")} == {"shard-r0", "shard-r1"}
    with pytest.raises(RelateAnythingError):
        collect(dataset, _FakeSegmenter(), tmp_path / "c", rank=2, world_size=2)


# ---------------------------------------------------------------------------------------------
# Proof that it learns


@pytest.fixture(scope="module")
def synthetic_caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_feature_cache(root / "train", images=800, seed=1)
    make_synthetic_feature_cache(root / "val", images=100, seed=2)
    return root / "train", root / "val"


@pytest.mark.slow
def test_training_learns_a_known_relation_rule(synthetic_caches):
    train_dir, val_dir = synthetic_caches
    result = train(train_dir, val_dir, config=tiny_config(epochs=10, lr_milestones=(9,)))
    final = result.history[-1]

    train_cache, val_cache = FeatureCache(train_dir, drop_empty=True), FeatureCache(val_dir, drop_empty=True)
    counts = train_cache.predicate_counts(56)
    gen = torch.Generator().manual_seed(0)
    baseline = mean_recall(
        [
            triplet_recall(frequency_baseline_logits(counts, im.num_masks, generator=gen), im.relations)
            for im in val_cache
        ]
    )
    assert final["R@20"] >= 0.9, result.history
    assert final["R@20"] > baseline["R@20"] + 0.4, (final, baseline)
    assert result.history[0]["loss"] > final["loss"]


@pytest.mark.slow
def test_resume_continues_exactly(synthetic_caches, tmp_path):
    train_dir, val_dir = synthetic_caches
    straight = train(train_dir, None, config=tiny_config(epochs=2, checkpoint_dir=tmp_path / "a"))
    train(train_dir, None, config=tiny_config(epochs=1, checkpoint_dir=tmp_path / "b"))
    resumed = train(train_dir, None, config=tiny_config(epochs=2, checkpoint_dir=tmp_path / "b", resume=True))
    for (name, a), b in zip(straight.head.state_dict().items(), resumed.head.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    loaded = RelationHead.from_checkpoint(tmp_path / "b" / "head.safetensors")
    torch.testing.assert_close(loaded.state_dict()["cls_sub.weight"], straight.head.state_dict()["cls_sub.weight"])
    assert (tmp_path / "b" / "head_ema.safetensors").is_file()


def test_bce_and_self_distillation_train(synthetic_caches):
    train_dir, val_dir = synthetic_caches
    result = train(train_dir, val_dir, config=tiny_config(epochs=1, loss="bce", distill_weight=0.3))
    assert np.isfinite(result.history[-1]["loss"]) and result.ema_head is not None


def _ddp_worker(rank: int, world: int, port: int, train_dir: Path, out: Path) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    result = train(train_dir, None, config=tiny_config(epochs=1, checkpoint_dir=out if rank == 0 else None))
    torch.save(result.head.state_dict(), out / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_on_cpu(synthetic_caches, tmp_path):
    train_dir, _ = synthetic_caches
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, train_dir, tmp_path), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert (tmp_path / "head.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# End to end with a tiny random SAM, and the CLI


class _WithGroundTruthMasks:
    """A Segmenter whose results also hold the current image's ground-truth masks (images are
    visited in dataset order), with the features SAM gives their bounding boxes."""

    def __init__(self, segmenter, dataset) -> None:
        self.segmenter, self.dataset, self.calls = segmenter, dataset, 0

    def set_image(self, pixels: np.ndarray) -> None:
        self.segmenter.set_image(pixels)

    def segment_everything(self) -> SegmentationResult:
        graph = self.dataset[self.calls]
        self.calls += 1
        masks = torch.from_numpy(graph.masks())
        boxes = torch.tensor([segment.bbox for segment in graph.segments])
        prompted = self.segmenter.segment_prompts(boxes=boxes)
        gt = SegmentationResult(
            masks=masks,
            iou_predictions=prompted.iou_predictions,
            stability_scores=prompted.stability_scores,
            boxes=boxes,
            features=prompted.features,
        )
        return SegmentationResult.concatenate([self.segmenter.segment_everything(), gt])


@pytest.mark.slow
def test_synth_collect_train_eval_end_to_end(tiny_sam, tmp_path):
    """data synth -> collect -> train -> predict (SGDet and PredCls) -> eval, with a tiny random SAM."""

    from typer.testing import CliRunner

    from conftest import RANDOM_WEIGHT_SETTINGS
    from relate_anything.cli import app
    from relate_anything.datasets import PsgDataset
    from relate_anything.pipeline import RelateAnything
    from relate_anything.sam import Segmenter, load_sam

    runner = CliRunner()
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "psg"), "--images", "4", "--seed", "0"])
    assert result.exit_code == 0, result.output
    dataset = PsgDataset(tmp_path / "psg", split=None)
    segmenter = Segmenter(load_sam(tiny_sam.folder), settings=RANDOM_WEIGHT_SETTINGS)
    # A random SAM's masks rarely match the ground truth, so few relations would survive. So that
    # relations survive matching, add the ground-truth masks to SAM's, each with the real SAM
    # feature of its box prompt (masks and features still go through the whole pipeline).
    stats = collect(dataset, _WithGroundTruthMasks(segmenter, dataset), tmp_path / "cache", shard_size=3)
    assert stats.images == len(dataset) and stats.masks > stats.gt_masks and stats.kept_relations > 0
    cache = FeatureCache(tmp_path / "cache")
    assert sorted(cache.image_ids()) == sorted(dataset[i].image_id for i in range(len(dataset)))
    for index, image in enumerate(cache):
        assert image.features.shape == (image.num_masks, 256)
        assert cache.masks(index).shape[0] == image.num_masks
        if len(image.relations):
            assert (
                image.relations[:, :2].max() < image.num_masks
                and (image.relations[:, 0] != image.relations[:, 1]).all()
            )
            assert (cache.matched_gt(index)[image.relations[:, :2]] >= 0).all()
    train(tmp_path / "cache", tmp_path / "cache", config=tiny_config(epochs=1, checkpoint_dir=tmp_path / "run"))
    head = RelationHead.from_checkpoint(tmp_path / "run" / "head.safetensors")

    # Predict with the trained head: SGDet graphs from the pipeline, PredCls on the ground truth.
    pipeline = RelateAnything(segmenter, head, top_k=20)
    for name in ("sgdet", "predcls"):
        (tmp_path / name).mkdir()
    for index in range(len(dataset)):
        truth = dataset[index]
        photo = dataset.image_path(index)
        sgdet = replace(pipeline(photo), image_id=truth.image_id)
        sgdet.save(tmp_path / "sgdet" / f"{truth.image_id}.json")
        pipeline.relate_regions(photo, truth).save(tmp_path / "predcls" / f"{truth.image_id}.json")
    result = runner.invoke(
        app,
        [
            "eval",
            str(tmp_path / "sgdet"),
            str(tmp_path / "psg"),
            "--split",
            "all",
            "--predcls",
            str(tmp_path / "predcls"),
            "--json",
            str(tmp_path / "scores.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["images"] == len(dataset)
    # Unnamed SAM segments can never hit a triplet under SGDet; PredCls scores real predictions.
    assert scores["sgdet"]["R@20"] == 0.0
    assert all(0.0 <= scores["predcls"][f"R@{k}"] <= 1.0 for k in (20, 50, 100))
    assert 0.0 <= scores["pq"]["PQ"] <= 1.0


def test_train_command_reports_errors_without_traceback(tmp_path):
    import typer
    from typer.testing import CliRunner

    from relate_anything.training.cli import collect_command, train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("collect")(collect_command)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "feature cache not found" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--loss", "hinge"])
    assert result.exit_code == 2 and "loss must be" in result.output


def test_collect_command_says_what_it_loaded_and_collected(tmp_path, small_sam):
    from typer.testing import CliRunner

    from conftest import RANDOM_WEIGHT_FLAGS
    from relate_anything.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "psg"), "--images", "2", "--seed", "0"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "cache"
    args = ["collect", str(tmp_path / "psg"), "--out", str(out), "--split", "all", "--sam", str(small_sam)]
    result = runner.invoke(app, [*args, *RANDOM_WEIGHT_FLAGS])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("loaded SAM ") and f"({small_sam}) on cpu in" in result.output
    assert "2 images collected (0 already cached" in result.output
    assert sorted(FeatureCache(out).image_ids()) == sorted(
        str(image["image_id"]) for image in json.loads((tmp_path / "psg" / "psg.json").read_text())["data"]
    )


def test_resume_refuses_a_state_file_that_would_run_code(tmp_path):
    make_synthetic_feature_cache(tmp_path / "cache", images=4, seed=0)
    (tmp_path / "run").mkdir()
    torch.save({"model": os.getcwd}, tmp_path / "run" / "train_state.pt")  # unpickling imports os.getcwd
    config = tiny_config(epochs=1, checkpoint_dir=tmp_path / "run", resume=True)
    with pytest.raises(RelateAnythingError, match="refused rather than unpickled") as error:
        train(tmp_path / "cache", None, config=config)
    assert "weights_only" not in str(error.value) and "train_state.pt" in str(error.value)
