"""The whole pipeline on real photos with tiny random SAM and RAM models."""

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import RANDOM_WEIGHT_SETTINGS
from relate_anything import RelateAnything, RelateAnythingError, SceneGraph, psg
from relate_anything.image_io import load_image


@pytest.fixture(scope="module")
def pipeline(tiny_sam, tiny_ram_pth):
    return RelateAnything.from_pretrained(tiny_sam.folder, tiny_ram_pth, top_k=15, settings=RANDOM_WEIGHT_SETTINGS)


def _check_relations(graph: SceneGraph, top_k: int):
    ids = {s.id for s in graph.segments}
    scores = [r.score for r in graph.relations]
    assert 0 < len(graph.relations) <= top_k
    assert scores == sorted(scores, reverse=True)
    assert all(r.subject != r.object and r.subject in ids and r.object in ids for r in graph.relations)
    assert all(psg.predicates()[r.predicate_id] == r.predicate for r in graph.relations)


def test_relate_anything(pipeline, dog_jpg):
    graph = pipeline(dog_jpg)
    assert (graph.width, graph.height, graph.file) == (640, 427, "dog.jpg")
    assert len(graph.segments) >= 2
    assert graph.features().shape == (len(graph.segments), 256)
    _check_relations(graph, 15)
    # The relation scores are the head's sigmoid scores of the segments' own features.
    logits = pipeline.relation_head.score(torch.from_numpy(graph.features()))
    for relation in graph.relations:
        expected = torch.sigmoid(logits[relation.predicate_id, relation.subject, relation.object]).item()
        assert relation.score == pytest.approx(expected, abs=1e-5)
    # ... and they are the best-scored triplets of all pairs.
    off_diagonal = ~torch.eye(len(graph.segments), dtype=torch.bool)
    assert graph.relations[0].score == pytest.approx(torch.sigmoid(logits[:, off_diagonal].max()).item(), abs=1e-5)


@pytest.mark.slow
def test_bfloat16_pipeline_runs_end_to_end(tiny_sam, tiny_ram_pth, dog_jpg):
    """SAM in bf16 (the GPU's fast path, here on the CPU): a whole graph, float32 features out."""
    pipeline = RelateAnything.from_pretrained(
        tiny_sam.folder, tiny_ram_pth, dtype=torch.bfloat16, top_k=15, settings=RANDOM_WEIGHT_SETTINGS
    )
    graph = pipeline(dog_jpg)
    assert pipeline.segmenter.model.dtype == torch.bfloat16
    assert len(graph.segments) >= 2 and graph.masks().shape == (len(graph.segments), 427, 640)
    features = graph.features()
    assert features.dtype == np.float32 and np.isfinite(features).all()
    _check_relations(graph, 15)


def test_relate_me_with_a_point(pipeline, dog_jpg):
    point = (400.0, 300.0)
    graph = pipeline(dog_jpg, point=point, top_k=7)
    _check_relations(graph, 7)
    assert {r.subject for r in graph.relations} == {0}
    # Segment 0 is the mask SAM gives for that point prompt.
    pipeline.segmenter.set_image(load_image(dog_jpg))
    prompted = pipeline.segmenter.segment_prompts(
        points=torch.tensor([point]), point_labels=torch.tensor([1]), multimask_output=False
    )
    assert np.array_equal(graph.segment(0).decode(), prompted.masks[0].cpu().numpy())
    # No other segment duplicates it.
    masks = graph.masks()
    inter = (masks[1:] & masks[0]).sum((1, 2))
    union = (masks[1:] | masks[0]).sum((1, 2))
    assert np.all(inter / np.maximum(union, 1) < pipeline.settings.duplicate_iou_thresh)


@pytest.mark.parametrize("prompt", [{"point": (400.0, 300.0)}, {"box": (100.0, 80.0, 500.0, 400.0)}])
def test_the_subject_is_sams_single_mask_token_as_in_rams_demo(pipeline, dog_jpg, prompt):
    """RAM's demo feeds the head the decoder's first mask token (multimask off); the best of the
    three candidates is there behind multimask=True."""
    pipeline.segmenter.set_image(load_image(dog_jpg))
    points = None if "point" not in prompt else torch.tensor([[prompt["point"]]])
    labels = None if points is None else torch.tensor([[1]])
    boxes = None if "box" not in prompt else torch.tensor([prompt["box"]])
    single = pipeline.segmenter.decode(points, labels, boxes, multimask_output=False)
    multi = pipeline.segmenter.decode(points, labels, boxes, multimask_output=True)
    graph = pipeline(dog_jpg, top_k=3, **prompt)
    np.testing.assert_array_equal(graph.segment(0).feature, single.mask_tokens[0, 0].numpy())
    assert graph.segment(0).score == pytest.approx(float(single.iou_predictions[0, 0]), abs=1e-6)
    best = int(multi.iou_predictions[0].argmax())
    chosen = pipeline(dog_jpg, top_k=3, multimask=True, **prompt)
    np.testing.assert_array_equal(chosen.segment(0).feature, multi.mask_tokens[0, best].numpy())
    assert not np.array_equal(graph.segment(0).feature, chosen.segment(0).feature)


def test_relate_me_with_a_box(pipeline, images_dir):
    graph = pipeline(images_dir / "two_dogs_stick.jpg", box=(60, 60, 360, 300), top_k=5)
    _check_relations(graph, 5)
    assert {r.subject for r in graph.relations} == {0}


@pytest.mark.parametrize("prompt", [{"point": (400, 300)}, {"box": (60, 60, 360, 300)}])
def test_an_empty_prompted_subject_is_an_error_that_says_so(pipeline, dog_jpg, prompt):
    from relate_anything.errors import PromptError

    no_pixel = replace(RANDOM_WEIGHT_SETTINGS, mask_threshold=1e6)
    with pytest.raises(
        PromptError, match=r"mask for the (point|box) .* is empty \(no pixel above mask_threshold 1e\+06\)"
    ):
        pipeline(dog_jpg, settings=no_pixel, **prompt)
    # Relate anything with the same settings: no segment at all, and no error.
    graph = pipeline(dog_jpg, settings=no_pixel)
    assert graph.segments == [] and graph.relations == []


@pytest.mark.parametrize("prompt", [{"point": (700, 10)}, {"box": (10, 10, 5, 50)}, {"box": (0, 0, 700, 100)}])
def test_prompt_outside_the_image(pipeline, dog_jpg, prompt):
    with pytest.raises(RelateAnythingError, match="outside|must satisfy"):
        pipeline(dog_jpg, **prompt)


def test_grayscale_array_input(pipeline):
    gray = (np.random.default_rng(0).random((300, 200)) * 255).astype(np.uint8)
    graph = pipeline(gray)
    assert (graph.width, graph.height) == (200, 300)


def test_relate_regions_keeps_the_given_segments(pipeline, dog_jpg):
    height, width = 427, 640
    masks = np.zeros((3, height, width), dtype=bool)
    masks[0, 100:300, 100:300] = True
    masks[1, 50:120, 500:700] = True
    masks[2, 400:, :] = True
    given = SceneGraph.from_masks(masks, [1.0, 1.0, 1.0], labels=["dog", "frisbee", "sand"])
    given = replace(given, segments=[replace(s, id=s.id + 10) for s in given.segments])
    graph = pipeline.relate_regions(dog_jpg, given, top_k=6)
    assert graph.segments == given.segments
    assert len(graph.relations) == 6
    assert all(
        r.subject in (10, 11, 12) and r.object in (10, 11, 12) and r.subject != r.object for r in graph.relations
    )
    # The scores are the head's on the box-prompt features of the regions.
    pipeline.segmenter.set_image(load_image(dog_jpg))
    boxes = torch.tensor([s.bbox for s in given.segments])
    logits = pipeline.relation_head.score(pipeline.segmenter.segment_prompts(boxes=boxes).features)
    top = graph.relations[0]
    assert top.score == pytest.approx(
        torch.sigmoid(logits[top.predicate_id, top.subject - 10, top.object - 10]).item(), abs=1e-5
    )


def test_relate_regions_checks_the_image_size(pipeline, dog_jpg):
    with pytest.raises(RelateAnythingError, match="regions are 10x10"):
        pipeline.relate_regions(dog_jpg, SceneGraph(width=10, height=10))


def test_batch_equals_one_photo_at_a_time(pipeline, images_dir):
    photos = sorted(images_dir.glob("*.jpg"))[:2]  # two sizes: 640x449 and 639x640
    batched = pipeline.batch(photos, top_k=5)
    assert [g.file for g in batched] == [p.name for p in photos]
    for photo, graph in zip(photos, batched):
        pipeline.segmenter.reset_image()
        alone = pipeline(photo, top_k=5)
        assert [s.mask for s in graph.segments] == [s.mask for s in alone.segments]
        np.testing.assert_allclose(graph.features(), alone.features(), atol=1e-4)
        assert [(r.subject, r.predicate_id, r.object) for r in graph.relations] == [
            (r.subject, r.predicate_id, r.object) for r in alone.relations
        ]


def test_batch_names_arrays_by_the_files_given(pipeline, dog_jpg):
    pixels = load_image(dog_jpg)
    assert [g.file for g in pipeline.batch([pixels, pixels], files=["a.jpg", None])] == ["a.jpg", None]
    with pytest.raises(ValueError, match="file names"):
        pipeline.batch([pixels], files=["a.jpg", "b.jpg"])


@pytest.mark.slow
def test_stream_yields_the_batch_graphs_in_order(pipeline, images_dir):
    photos = sorted(images_dir.glob("*.jpg"))[:3]
    pipeline.segmenter.reset_image()
    batched = pipeline.batch(photos, top_k=5)
    pipeline.segmenter.reset_image()
    streamed = list(pipeline.stream(iter(photos), batch_size=2, top_k=5))  # batches of 2 and 1
    assert [g.file for g in streamed] == [p.name for p in photos]
    for graph, expected in zip(streamed, batched):
        assert [s.mask for s in graph.segments] == [s.mask for s in expected.segments]
        assert [(r.subject, r.predicate_id, r.object) for r in graph.relations] == [
            (r.subject, r.predicate_id, r.object) for r in expected.relations
        ]


def test_stream_reports_an_unreadable_photo(pipeline, images_dir, tmp_path):
    from relate_anything.errors import ImageError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError):
        list(pipeline.stream([broken], batch_size=1))
    with pytest.raises(ValueError, match="batch_size"):
        list(pipeline.stream([broken], batch_size=0))


def test_settings_per_call_leave_the_pipeline_as_it_was(pipeline, dog_jpg, tiny_sam, tiny_ram_pth):
    coarse = replace(RANDOM_WEIGHT_SETTINGS, points_per_side=2)
    graph = pipeline(dog_jpg, settings=coarse, top_k=5)
    assert pipeline.settings == RANDOM_WEIGHT_SETTINGS and pipeline.segmenter.settings == RANDOM_WEIGHT_SETTINGS
    # The same graph as a pipeline built with those settings.
    built = RelateAnything.from_pretrained(tiny_sam.folder, tiny_ram_pth, top_k=5, settings=coarse)
    expected = built(dog_jpg)
    assert [s.mask for s in graph.segments] == [s.mask for s in expected.segments]
    assert graph.relations == expected.relations
    default = pipeline(dog_jpg, top_k=5)
    assert len(default.segments) > len(graph.segments)  # 4 x 4 grid points against 2 x 2


def test_top_k_zero_keeps_no_relation_and_negative_is_an_error(pipeline, dog_jpg):
    graph = pipeline(dog_jpg, top_k=0)
    assert graph.relations == [] and graph.segments
    with pytest.raises(RelateAnythingError, match="top_k"):
        pipeline(dog_jpg, top_k=-1)
    with pytest.raises(RelateAnythingError, match="top_k"):
        RelateAnything(pipeline.segmenter, pipeline.relation_head, top_k=-3)


def test_a_head_for_another_token_width_is_refused(pipeline):
    from relate_anything.ram import RelationHead, RelationHeadConfig

    head = RelationHead(RelationHeadConfig(feature_dim=32, hidden_size=64, num_heads=2, intermediate_size=32))
    with pytest.raises(RelateAnythingError, match="trained on 32-d mask tokens .* gives 256-d tokens"):
        RelateAnything(pipeline.segmenter, head)


def test_the_builder_reports_each_model_it_loads_and_draws_no_bar(tiny_sam, tiny_ram_pth, tiny_clip_folder, capfd):
    """transformers draws a "Loading weights" bar for each model; `build` draws none and reports
    each model to `on_loaded` instead (the commands print these lines)."""
    from transformers import SamModel

    from relate_anything.pipeline import LoadedModel, PipelineSpec

    SamModel.from_pretrained(tiny_sam.folder)
    assert "Loading weights" in capfd.readouterr().err  # transformers on its own
    loaded: list[LoadedModel] = []
    spec = PipelineSpec(sam=str(tiny_sam.folder), ram=str(tiny_ram_pth), labeler=str(tiny_clip_folder), dtype="bf16")
    spec.build("cpu", on_loaded=loaded.append)
    assert "Loading weights" not in capfd.readouterr().err
    assert [(m.name, m.reference, m.device) for m in loaded] == [
        ("SAM ViT 32x2 in bfloat16", str(tiny_sam.folder), "cpu"),
        ("RAM relation head", str(tiny_ram_pth), "cpu"),
        ("labeler (CLIP/SigLIP)", str(tiny_clip_folder), "cpu"),
    ]
    assert all(m.seconds > 0 for m in loaded)
    assert re.fullmatch(r"loaded RAM relation head \(.*ram_epoch12\.pth\) on cpu in \d+\.\d s", str(loaded[1]))


def test_sam_variants_are_named():
    from types import SimpleNamespace

    from relate_anything.pipeline_spec import sam_variant

    def config(width, depth):
        return SimpleNamespace(vision_config=SimpleNamespace(hidden_size=width, num_hidden_layers=depth))

    assert [sam_variant(config(*shape)) for shape in [(768, 12), (1024, 24), (1280, 32), (32, 2)]] == [
        "ViT-B",
        "ViT-L",
        "ViT-H",
        "ViT 32x2",
    ]
