"""Naming segments (vocabularies, the CLIP/SigLIP labeler), finding by text (OWLv2), relation queries.

Models are tiny random CLIP / SigLIP / OWLv2 built by naming_factory and saved like hub folders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relate_anything import psg
from relate_anything.errors import CheckpointError, RelateAnythingError, WeightsNotFoundError
from relate_anything.naming import Vocabulary, VocabularyEntry, VocabularyError, matches, query
from relate_anything.scene_graph import Relation, SceneGraph

naming_factory = pytest.importorskip("naming_factory")


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    model, tokenizer = naming_factory.tiny_clip()
    return naming_factory.save(model, tokenizer, tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    model, tokenizer = naming_factory.tiny_siglip()
    preprocessor = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    return naming_factory.save(model, tokenizer, tmp_path_factory.mktemp("tiny_siglip"), preprocessor=preprocessor)


@pytest.fixture(scope="module")
def owlv2_folder(tmp_path_factory):
    model, tokenizer = naming_factory.tiny_owlv2()
    return naming_factory.save(model, tokenizer, tmp_path_factory.mktemp("tiny_owlv2"))


@pytest.fixture(scope="module")
def clip_labeler(clip_folder):
    from relate_anything.naming import Labeler

    return Labeler.from_pretrained(clip_folder)


@pytest.fixture(scope="module")
def siglip_labeler(siglip_folder):
    from relate_anything.naming import Labeler

    return Labeler.from_pretrained(siglip_folder)


@pytest.fixture(scope="module")
def detector(owlv2_folder):
    from relate_anything.naming import Detector

    return Detector.from_pretrained(owlv2_folder)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def graph() -> SceneGraph:
    masks = np.zeros((4, 40, 60), dtype=bool)
    masks[0, 5:20, 5:30] = True
    masks[1, 20:, :] = True
    masks[2] = True
    masks[3, 30:38, 50:58] = True
    return SceneGraph.from_masks(masks, np.full(4, 0.9))


# -- vocabularies ---------------------------------------------------------------------------------


def test_psg_readable_names_cover_all_133_unique_and_clean():
    vocabulary = Vocabulary.psg()
    assert len(vocabulary) == 133
    assert len(set(vocabulary.names)) == 133
    assert [entry.category_id for entry in vocabulary.entries] == list(range(133))
    for name in vocabulary.names:
        assert not any(part in name for part in ("-merged", "-stuff", "-other", "-")), name
    readable = dict(zip(psg.categories(), vocabulary.names))
    assert readable["tree-merged"] == "tree"
    assert readable["wall-other-merged"] == "wall"
    assert readable["sky-other-merged"] == "sky"
    assert readable["door-stuff"] == "door"
    assert readable["playingfield"] == "playing field"
    assert readable["wall-brick"] == "brick wall"
    assert readable["window-blind"] == "window blind"
    assert readable["dining table"] == "dining table"
    assert readable["person"] == "person"


def test_entries_are_independent_prompts_from_templates():
    entry = VocabularyEntry.from_name("  red   car ", templates=("a photo of a {}.", "a {} in the scene."))
    assert entry == VocabularyEntry("red car", ("a photo of a red car.", "a red car in the scene."), None)
    assert Vocabulary.psg().entries[116].prompts[0] == "a photo of a tree."


def test_vocabulary_from_names_and_parse(tmp_path):
    assert Vocabulary.from_names(["dog", "stick", "sand"]).names == ("dog", "stick", "sand")
    assert Vocabulary.parse("dog, stick ,sand,").names == ("dog", "stick", "sand")
    assert Vocabulary.parse("hot dog").names == ("hot dog",)
    assert Vocabulary.parse("psg") is Vocabulary.psg()
    path = tmp_path / "vocab.txt"
    path.write_text("# things\ndog\n\nred umbrella\n  stick  \n")
    assert Vocabulary.parse(str(path)).names == ("dog", "red umbrella", "stick")
    assert Vocabulary.parse(path).names == ("dog", "red umbrella", "stick")
    assert all(entry.category_id is None for entry in Vocabulary.parse(path).entries)


@pytest.mark.parametrize("text", ["", "  ", ",", " , ,"])
def test_empty_vocabulary_is_a_clear_error(text):
    with pytest.raises(VocabularyError, match="no names|empty"):
        Vocabulary.parse(text)


def test_vocabulary_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(VocabularyError, match="no names"):
        Vocabulary.parse(empty)
    with pytest.raises(VocabularyError, match="cannot read"):
        Vocabulary.parse(tmp_path / "missing.txt")
    with pytest.raises(VocabularyError, match="cannot read"):
        Vocabulary.parse("no-such-vocab.txt")
    with pytest.raises(VocabularyError, match="empty"):
        Vocabulary.from_names([])
    with pytest.raises(VocabularyError, match="more than once"):
        Vocabulary.from_names(["dog", " dog"])
    assert issubclass(VocabularyError, RelateAnythingError)


# -- scoring --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_matrix_scores_equal_a_loop_over_segments_and_prompts(family, clip_labeler, siglip_labeler):
    labeler = clip_labeler if family == "clip" else siglip_labeler
    generator = torch.Generator().manual_seed(1)
    regions, texts = torch.randn(5, 16, generator=generator), torch.randn(7, 16, generator=generator)
    if family == "siglip":
        dim = labeler.model.config.text_config.hidden_size
        regions, texts = torch.randn(5, dim, generator=generator), torch.randn(7, dim, generator=generator)
    scores = labeler.score(regions, texts)
    scale = float(labeler.model.logit_scale.detach().exp())
    bias = float(labeler.model.logit_bias.detach()) if family == "siglip" else 0.0
    expected = torch.zeros(5, 7)
    for i in range(5):
        logits = []
        for j in range(7):
            cosine = float(regions[i] @ texts[j]) / float(regions[i].norm() * texts[j].norm())
            logits.append(cosine * scale + bias)
        logits = torch.tensor(logits)
        expected[i] = logits.sigmoid() if family == "siglip" else logits.softmax(dim=0)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    if family == "clip":
        torch.testing.assert_close(scores.sum(dim=1), torch.ones(5))


def test_vocabulary_embedding_is_the_normalised_mean_of_its_prompts(clip_labeler):
    vocabulary = Vocabulary.from_names(["dog", "stick"])
    embeddings = clip_labeler.embed_vocabulary(vocabulary)
    assert embeddings.shape == (2, 16)
    prompts = clip_labeler.embed_texts(list(vocabulary.entries[1].prompts))
    expected = torch.nn.functional.normalize(prompts.mean(dim=0), dim=0)
    torch.testing.assert_close(embeddings[1], expected)
    assert clip_labeler.embed_vocabulary(vocabulary) is embeddings  # cached


def test_vocabulary_cache_keeps_the_most_recent(clip_folder):
    from relate_anything.naming import Labeler

    labeler = Labeler.from_pretrained(clip_folder, vocabulary_cache_size=2)
    first, second, third = (Vocabulary.from_names([name]) for name in ("dog", "stick", "sand"))
    kept_first, kept_second = labeler.embed_vocabulary(first), labeler.embed_vocabulary(second)
    assert labeler.embed_vocabulary(first) is kept_first  # a hit makes it the most recent
    labeler.embed_vocabulary(third)  # so this evicts second
    assert labeler.embed_vocabulary(first) is kept_first
    again = labeler.embed_vocabulary(second)
    assert again is not kept_second and torch.equal(again, kept_second)  # encoded anew, same values


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_threshold_zero_names_every_segment_with_the_argmax(family, clip_labeler, siglip_labeler, photo, graph):
    from relate_anything.naming import Labeler

    base = clip_labeler if family == "clip" else siglip_labeler
    labeler = Labeler(base.model, base.tokenizer, normalization=base.normalization, threshold=0.0)
    vocabulary = Vocabulary.psg()
    scores = labeler.score(labeler.embed_regions(photo, graph), labeler.embed_vocabulary(vocabulary))
    named = labeler.label(photo, graph, vocabulary)
    assert [s.category_id for s in named.segments] == scores.argmax(dim=1).tolist()
    assert [s.label for s in named.segments] == [vocabulary.names[i] for i in scores.argmax(dim=1).tolist()]
    np.testing.assert_allclose([s.label_score for s in named.segments], scores.max(dim=1).values.numpy(), atol=1e-6)
    assert [s.mask for s in named.segments] == [s.mask for s in graph.segments]


def test_threshold_above_every_score_names_nothing(clip_labeler, photo, graph):
    from relate_anything.naming import Labeler

    labeler = Labeler(clip_labeler.model, clip_labeler.tokenizer, threshold=1.01)
    labelled = SceneGraph.from_masks(
        graph.masks(), np.ones(4), labels=["x"] * 4, label_scores=[1.0] * 4, category_ids=[1] * 4
    )
    named = labeler.label(photo, labelled)
    assert all(s.label is None and s.label_score is None and s.category_id is None for s in named.segments)


def test_threshold_splits_named_from_unnamed(clip_labeler, photo, graph):
    from relate_anything.naming import Labeler

    vocabulary = Vocabulary.from_names(["dog", "stick", "sand"])
    scores = clip_labeler.score(clip_labeler.embed_regions(photo, graph), clip_labeler.embed_vocabulary(vocabulary))
    best = scores.max(dim=1).values
    threshold = float(best.median())
    labeler = Labeler(clip_labeler.model, clip_labeler.tokenizer, threshold=threshold)
    named = labeler.label(photo, graph, vocabulary)
    assert [s.label is not None for s in named.segments] == (best >= threshold).tolist()
    assert all(s.category_id is None for s in named.segments)  # custom names have no PSG id
    assert {s.label for s in named.segments} <= {"dog", "stick", "sand", None}


def test_name_masks_gives_from_masks_arguments(clip_labeler, photo, graph):
    names = clip_labeler.name_masks(photo, torch.from_numpy(graph.masks()))
    built = SceneGraph.from_masks(graph.masks(), np.full(4, 0.9), **names._asdict())
    assert built == clip_labeler.label(photo, graph)
    assert clip_labeler.name_masks(photo, np.zeros((0, 40, 60), dtype=bool)) == ([], [], [])


def test_relations_survive_labelling(clip_labeler, photo, graph):
    related = graph.with_relations([Relation(0, psg.predicates()[0], 0, 1, 0.5)])
    assert clip_labeler.label(photo, related).relations == related.relations


def test_chunked_region_batches_equal_one_batch(clip_labeler, photo, graph):
    from relate_anything.naming import Labeler

    one_at_a_time = Labeler(clip_labeler.model, clip_labeler.tokenizer, batch_size=1)
    chunked = one_at_a_time.embed_regions(photo, graph)
    torch.testing.assert_close(chunked, clip_labeler.embed_regions(photo, graph), atol=1e-5, rtol=1e-4)


# -- preprocessing --------------------------------------------------------------------------------


def test_region_crops_suppress_background_and_centre_the_region():
    from relate_anything.naming.preprocess import Normalization, region_crops

    normalization = Normalization(size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    image = np.full((50, 80, 3), 255, dtype=np.uint8)
    masks = torch.zeros(2, 50, 80, dtype=torch.bool)
    masks[0, 10:30, 20:40] = True  # a 20 x 20 square
    crops = region_crops(image, masks, normalization, margin=0.5)
    assert crops.shape == (2, 3, 32, 32)
    # Window side 40 around the square: the square fills the middle 16 x 16 pixels, white.
    white = (1.0 - torch.tensor(normalization.mean)) / 0.2
    torch.testing.assert_close(crops[0, :, 12:20, 12:20], white.view(3, 1, 1).expand(3, 8, 8), atol=1e-4, rtol=0)
    assert crops[0, :, :6].abs().max() < 1e-5 and crops[0, :, :, -6:].abs().max() < 1e-5  # mean colour -> 0
    assert crops[1].abs().max() < 1e-5  # an empty mask is all background


def test_full_image_crop_matches_clip_image_processor():
    transformers = pytest.importorskip("transformers")
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    from relate_anything.naming.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Normalization, region_crops

    # A smooth image: resampling kernels (PIL vs torch bicubic) then differ by rounding only.
    y, x = np.mgrid[0:96, 0:96]
    image = np.stack([x * 2.5, y * 2.5, (x + y) * 1.2], axis=-1).astype(np.uint8)
    normalization = Normalization(size=32, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    ours = region_crops(image, torch.ones(1, 96, 96, dtype=torch.bool), normalization, margin=0.0)
    processor = processor_class(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    theirs = processor(images=image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0)


def test_owlv2_pixels_match_owlv2_image_processor():
    transformers = pytest.importorskip("transformers")
    processor_class = getattr(transformers, "Owlv2ImageProcessorPil", None) or transformers.Owlv2ImageProcessor
    from relate_anything.naming.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Normalization, owlv2_pixels

    y, x = np.mgrid[0:50, 0:80]  # landscape: padded at the bottom, then downscaled 80 -> 32 (blurred)
    image = np.stack([x * 3, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    ours = owlv2_pixels(image, Normalization(size=32, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD))
    theirs = processor_class(size={"height": 32, "width": 32})(images=image, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    torch.testing.assert_close(ours, theirs, atol=0.03, rtol=0)


def test_owlv2_boxes_map_back_through_the_square_padding():
    from relate_anything.naming.preprocess import owlv2_boxes_to_image

    # A 50 x 100 (H x W) photo is padded to 100 x 100: relative units are 100 px on both axes.
    boxes = torch.tensor([[0.5, 0.25, 0.2, 0.1], [0.95, 0.45, 0.2, 0.2], [0.5, 0.9, 0.2, 0.1]])
    mapped = owlv2_boxes_to_image(boxes, (50, 100))
    expected = torch.tensor([[40.0, 20.0, 60.0, 30.0], [85.0, 35.0, 100.0, 50.0], [40.0, 50.0, 60.0, 50.0]])
    torch.testing.assert_close(mapped, expected)
    # Portrait: the padding is on the right.
    portrait = owlv2_boxes_to_image(torch.tensor([[0.25, 0.5, 0.5, 1.0]]), (80, 40))
    torch.testing.assert_close(portrait, torch.tensor([[0.0, 0.0, 40.0, 80.0]]))


# -- loading --------------------------------------------------------------------------------------


def test_labeler_loads_clip_and_siglip_folders(clip_labeler, siglip_labeler):
    assert clip_labeler.family == "clip" and siglip_labeler.family == "siglip"
    assert clip_labeler.normalization.size == 32
    assert siglip_labeler.normalization.mean == (0.5, 0.5, 0.5)  # from preprocessor_config.json
    assert clip_labeler.threshold == 0.2 and siglip_labeler.threshold == 0.05


def test_labeler_reference_from_environment(clip_folder, monkeypatch):
    from relate_anything.naming import Labeler

    monkeypatch.setenv("RELATE_ANYTHING_LABELER", str(clip_folder))
    assert Labeler.from_pretrained(threshold=0.5).threshold == 0.5


def test_loading_errors(tmp_path, owlv2_folder, clip_folder):
    from relate_anything.naming import Detector, Labeler

    with pytest.raises(WeightsNotFoundError, match="--labeler"):
        Labeler.from_pretrained(tmp_path / "missing")
    with pytest.raises(WeightsNotFoundError, match="RELATE_ANYTHING_DETECTOR"):
        Detector.from_pretrained("nobody/no-such-detector-xyz")  # tests run offline
    with pytest.raises(CheckpointError, match="not a transformers clip/siglip folder"):
        Labeler.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="owlv2"):
        Labeler.from_pretrained(owlv2_folder)
    with pytest.raises(CheckpointError, match="clip"):
        Detector.from_pretrained(clip_folder)


def test_labeler_rejects_bad_inputs(clip_labeler, photo, graph):
    with pytest.raises(RelateAnythingError, match="60x40"):
        clip_labeler.label(photo[:, :50], graph)
    with pytest.raises(RelateAnythingError, match="uint8"):
        clip_labeler.label(photo.astype(np.float32), graph)
    with pytest.raises(ValueError, match="embedding sizes"):
        clip_labeler.score(torch.randn(2, 16), torch.randn(3, 8))
    empty = SceneGraph(width=60, height=40)
    assert clip_labeler.label(photo, empty) is empty
    assert clip_labeler.embed_masks(photo, np.zeros((0, 40, 60), dtype=bool)).shape == (0, 16)


# -- find by text ---------------------------------------------------------------------------------


def test_find_segments_ranks_every_segment(clip_labeler, siglip_labeler, photo, graph):
    from relate_anything.naming import find_segments

    found = find_segments(clip_labeler, photo, graph, "the dog")
    assert sorted(i for i, _ in found) == [0, 1, 2, 3]
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)  # CLIP: softmax over the segments
    regions = clip_labeler.embed_regions(photo, graph)
    assert find_segments(clip_labeler, photo, graph, "the dog", region_embeddings=regions) == found
    siglip = find_segments(siglip_labeler, photo, graph, "a dog")
    assert all(0 < s < 1 for _, s in siglip)
    assert find_segments(clip_labeler, photo, SceneGraph(width=60, height=40), "dog") == []


def test_detect_returns_boxes_in_image_pixels(detector, photo):
    from relate_anything.naming import Detection, Detector

    everything = Detector(detector.model, detector.tokenizer, nms_threshold=None)
    detections = everything.detect(photo, ["a dog", "a stick"], threshold=0.0)
    patches = (32 // 8) ** 2
    assert 0 < len(detections) <= patches  # one box per patch, minus boxes wholly in the padding
    for detection in detections:
        assert isinstance(detection, Detection)
        x0, y0, x1, y1 = detection.box
        assert 0 <= x0 < x1 <= 60 and 0 <= y0 < y1 <= 40
        assert detection.phrase in ("a dog", "a stick") and 0 <= detection.score <= 1
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    assert len(detector.detect(photo, ["a dog", "a stick"], threshold=0.0)) <= len(detections)  # NMS


def test_detect_threshold(detector, photo):
    everything = detector.detect(photo, ["a dog"], threshold=0.0)
    assert detector.detect(photo, ["a dog"], threshold=1.01) == []
    cut = sorted(d.score for d in everything)[len(everything) // 2] - 1e-6  # scores are rounded to 1e-6
    assert detector.detect(photo, ["a dog"], threshold=cut) == [d for d in everything if d.score >= cut]


def test_detect_rejects_bad_inputs(detector, photo):
    with pytest.raises(RelateAnythingError, match="phrase"):
        detector.detect(photo, [])
    with pytest.raises(RelateAnythingError, match="phrase"):
        detector.detect(photo, ["dog", "  "])
    with pytest.raises(RelateAnythingError, match="uint8"):
        detector.detect(photo.astype(float), ["dog"])


def test_detections_are_boxes_the_pipeline_gives_sam(tiny_sam, tiny_ram_pth, tiny_owlv2_folder, photo):
    """The detector returns boxes only; the pipeline prompts SAM with them (one decoder pass),
    and the found segments come first, named by the phrase with the detector's score."""
    from conftest import RANDOM_WEIGHT_SETTINGS
    from relate_anything import RelateAnything
    from relate_anything.naming import Detector

    pipeline = RelateAnything.from_pretrained(
        tiny_sam.folder, tiny_ram_pth, detector=str(tiny_owlv2_folder), settings=RANDOM_WEIGHT_SETTINGS
    )
    assert isinstance(pipeline.detector, Detector)
    found = pipeline.detector.detect(photo, ["a dog"])
    assert found  # random OWLv2 weights score some boxes above the default threshold
    graph = pipeline(photo, find="a dog", top_k=3)
    pipeline.segmenter.set_image(photo)
    expected = pipeline.segmenter.segment_prompts(boxes=[d.box for d in found])
    for k, detection in enumerate(found):
        segment = graph.segments[k]
        assert (segment.label, segment.label_score) == (detection.phrase, detection.score)
        assert np.array_equal(segment.decode(), expected.masks[k].numpy())
        np.testing.assert_array_equal(segment.feature, expected.features[k].numpy())


# -- relation queries -----------------------------------------------------------------------------


@pytest.fixture()
def labelled_graph() -> SceneGraph:
    masks = np.zeros((4, 8, 8), dtype=bool)
    for index in range(4):
        masks[index, index] = True
    graph = SceneGraph.from_masks(masks, np.ones(4), labels=["Man", "hot dog", "woman", None])
    names = psg.predicates()
    on, holding, beside = names.index("on"), names.index("holding"), names.index("beside")
    standing_on = names.index("standing on")

    def rel(s, p, o, score):
        return Relation(s, names[p], p, o, score)

    return graph.with_relations(
        [
            rel(0, holding, 1, 0.9),
            rel(2, standing_on, 0, 0.8),
            rel(0, on, 3, 0.7),
            rel(2, beside, 1, 0.6),
            rel(1, on, 2, 0.5),
        ]
    )


def test_query_filters_by_subject_predicate_object(labelled_graph):
    def triplets(graph):
        return [(r.subject, r.predicate, r.object) for r in graph.relations]

    assert triplets(query(labelled_graph, subject="man")) == [(0, "holding", 1), (0, "on", 3)]  # not "woman"
    assert triplets(query(labelled_graph, object="dog")) == [(0, "holding", 1), (2, "beside", 1)]
    assert triplets(query(labelled_graph, predicate="on")) == [(2, "standing on", 0), (0, "on", 3), (1, "on", 2)]
    exact = query(labelled_graph, subject="WOMAN", predicate="standing  on", object="man")
    assert triplets(exact) == [(2, "standing on", 0)]
    assert triplets(query(labelled_graph, subject=0, object=3)) == [(0, "on", 3)]
    assert triplets(query(labelled_graph, subject="cat")) == []
    assert query(labelled_graph) == labelled_graph


def test_query_keeps_segments_and_ranks(labelled_graph):
    filtered = query(labelled_graph, predicate="on")
    assert filtered.segments == labelled_graph.segments
    scores = [r.score for r in filtered.relations]
    assert scores == sorted(scores, reverse=True)
    assert labelled_graph.relations[0].predicate == "holding"  # the input is not modified


def test_matches_whole_words_case_insensitively():
    assert matches("dog", "Hot Dog") and matches("hot dog", "hot  dog") and matches("Dog", "dog")
    assert not matches("dog", "hotdog") and not matches("man", "woman") and not matches("on", "in front of")
    assert not matches("dog", None) and not matches("table", "tables")
    with pytest.raises(ValueError, match="empty"):
        query(SceneGraph(width=1, height=1), subject=" ")
