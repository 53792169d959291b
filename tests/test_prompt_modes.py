"""Naming, finding and segment-by-example inside the pipeline and the CLI (tiny random models)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import RANDOM_WEIGHT_FLAGS, RANDOM_WEIGHT_SETTINGS
from relate_anything import RelateAnything, RelateAnythingError
from relate_anything.cli import app
from relate_anything.image_io import load_image
from relate_anything.naming import Detector, Labeler, Vocabulary, find_segments
from relate_anything.seggpt import ExampleSegmenter, example_segments

VOCABULARY = Vocabulary.from_names(["dog", "stick", "sand"])


@pytest.fixture(scope="module")
def pipeline(tiny_sam, tiny_ram_pth):
    return RelateAnything.from_pretrained(tiny_sam.folder, tiny_ram_pth, top_k=10, settings=RANDOM_WEIGHT_SETTINGS)


@pytest.fixture(scope="module")
def labeler(tiny_clip_folder):
    return Labeler.from_pretrained(tiny_clip_folder, threshold=0.0)


@pytest.fixture
def dog(dog_jpg):
    return load_image(dog_jpg)


def _with(pipeline, **stages):
    return RelateAnything(
        pipeline.segmenter, pipeline.relation_head, settings=pipeline.settings, top_k=pipeline.top_k, **stages
    )


def test_labeler_names_every_segment(pipeline, labeler, dog):
    graph = _with(pipeline, labeler=labeler, vocabulary=VOCABULARY)(dog)
    assert graph.segments and all(
        s.label in {"dog", "stick", "sand"} and 0 <= s.label_score <= 1 for s in graph.segments
    )
    assert all(graph.describe(r).split(" #")[0] in {"dog", "stick", "sand"} for r in graph.relations)


def test_find_by_text_makes_the_best_match_the_subject(pipeline, labeler, dog):
    graph = _with(pipeline, labeler=labeler)(dog, find="dog", vocabulary=VOCABULARY)
    assert {r.subject for r in graph.relations} == {0}
    # Segment 0 is the one the labeler ranks first for the phrase among the automatic segments
    # (found here from the graph's RLE masks; the pipeline reuses the crops it embedded to name).
    plain = _with(pipeline, labeler=labeler)(dog, vocabulary=VOCABULARY)
    best, _ = find_segments(labeler, dog, plain, "dog")[0]
    assert np.array_equal(graph.segment(0).decode(), plain.segment(best).decode())
    assert graph.segment(0).label == plain.segment(best).label


def test_crops_are_embedded_once_for_naming_and_finding(pipeline, labeler, dog):
    calls = []
    handle = labeler.model.vision_model.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        graph = _with(pipeline, labeler=labeler)(dog, find="dog", vocabulary=VOCABULARY)
    finally:
        handle.remove()
    passes = -(-len(graph.segments) // labeler.batch_size)  # ceil: one pass per chunk of crops
    assert len(calls) == passes


def test_find_with_a_detector_adds_its_boxes_as_segments(pipeline, tiny_owlv2_folder, dog):
    detector = Detector.from_pretrained(tiny_owlv2_folder)
    detections = detector.detect(dog, ["dog"])
    assert detections  # random OWLv2 weights do score some boxes above the default threshold
    graph = _with(pipeline, detector=detector)(dog, find="dog")
    assert graph.segments[0].label == "dog" and graph.segments[0].label_score == pytest.approx(detections[0].score)
    assert {r.subject for r in graph.relations} == {0}


def test_find_needs_a_labeler_or_detector(pipeline, dog):
    with pytest.raises(RelateAnythingError, match="needs a labeler or a detector"):
        pipeline(dog, find="dog")


def test_examples_join_the_graph_first(pipeline, tiny_seggpt_folder, dog):
    example_segmenter = ExampleSegmenter.from_pretrained(tiny_seggpt_folder)
    mask = np.zeros(dog.shape[:2], dtype=bool)
    mask[100:300, 200:500] = True
    examples = [(dog, mask)]
    expected = example_segments(example_segmenter, dog, examples)
    graph = _with(pipeline, example_segmenter=example_segmenter)(dog, examples=examples)
    assert len(expected) > 0
    # SegGPT's masks come first, each with SAM's mask token for a box prompt of its pixel edges.
    pipeline.segmenter.set_image(dog)
    edges = expected.boxes + torch.tensor([0, 0, 1, 1])
    tokens = pipeline.segmenter.segment_prompts(boxes=edges).features
    for k in range(len(expected)):
        assert np.array_equal(graph.segment(k).decode(), expected.masks[k].cpu().numpy())
        np.testing.assert_array_equal(graph.segment(k).feature, tokens[k].numpy())


def _cli_models(tiny_sam, tiny_ram_pth):
    return ["--sam", str(tiny_sam.folder), "--ram", str(tiny_ram_pth), *RANDOM_WEIGHT_FLAGS]


def test_cli_vocab_and_query(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth, tiny_clip_folder):
    runner = CliRunner()
    args = [
        "run",
        str(dog_jpg),
        "--out",
        str(tmp_path),
        *_cli_models(tiny_sam, tiny_ram_pth),
        "--labeler",
        str(tiny_clip_folder),
    ]
    result = runner.invoke(app, [*args, "--vocab", "dog,stick,sand"])
    assert result.exit_code == 0, result.output
    graph = json.loads((tmp_path / "dog.json").read_text())
    assert {s.get("label") for s in graph["segments"]} <= {"dog", "stick", "sand", None}
    named = [s for s in graph["segments"] if s.get("label")]
    assert named, "the tiny CLIP names at least one segment at the default threshold"
    label = named[0]["label"]
    result = runner.invoke(
        app, [*args, "--vocab", "dog,stick,sand", "--subject", label, "--predicate", "on", "--top-k", "3"]
    )
    assert result.exit_code == 0, result.output
    queried = json.loads((tmp_path / "dog.json").read_text())
    labels = {s["id"]: s.get("label") for s in queried["segments"]}
    assert len(queried["relations"]) <= 3
    assert all(labels[r["subject"]] == label and "on" in r["predicate"].split() for r in queried["relations"])


def test_cli_psg_vocabulary_sets_category_ids(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth, tiny_clip_folder):
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(dog_jpg),
            "--out",
            str(tmp_path),
            *_cli_models(tiny_sam, tiny_ram_pth),
            "--labeler",
            str(tiny_clip_folder),
            "--label-threshold",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    segments = json.loads((tmp_path / "dog.json").read_text())["segments"]
    from relate_anything.naming import psg_readable_name
    from relate_anything.psg import categories

    named = [s for s in segments if s.get("label")]
    assert named and all(s["label"] == psg_readable_name(categories()[s["category_id"]]) for s in named)


@pytest.mark.slow
def test_cli_example(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth, tiny_seggpt_folder):
    mask = np.zeros((427, 640), dtype=np.uint8)
    mask[100:300, 200:500] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    args = [
        "run",
        str(dog_jpg),
        "--out",
        str(tmp_path / "out"),
        *_cli_models(tiny_sam, tiny_ram_pth),
        "--seggpt",
        str(tiny_seggpt_folder),
    ]
    result = CliRunner().invoke(app, [*args, "--example", str(dog_jpg), "--example-mask", str(tmp_path / "mask.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "dog.json").exists()
    Image.fromarray(mask[:100]).save(tmp_path / "small.png")
    result = CliRunner().invoke(app, [*args, "--example", str(dog_jpg), "--example-mask", str(tmp_path / "small.png")])
    assert result.exit_code == 2 and "640x100" in result.output and "640x427" in result.output
    result = CliRunner().invoke(app, [*args, "--example", str(dog_jpg)])
    assert result.exit_code == 2 and "one --example-mask for each --example" in result.output


def test_cli_empty_vocabulary(tmp_path, dog_jpg, tiny_sam, tiny_ram_pth, tiny_clip_folder):
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(dog_jpg),
            "--out",
            str(tmp_path),
            *_cli_models(tiny_sam, tiny_ram_pth),
            "--labeler",
            str(tiny_clip_folder),
            "--vocab",
            " , ",
        ],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output and "vocabulary" in result.output.lower()
