import json

import networkx
import numpy as np
import pytest
import torch

from relate_anything import psg
from relate_anything.scene_graph import SCHEMA, Relation, SceneGraph, SceneGraphFormatError, decode_mask, encode_masks


def _graph(features: bool = True) -> SceneGraph:
    masks = np.zeros((3, 20, 30), dtype=bool)
    masks[0, 2:8, 3:10] = True
    masks[1, 10:20, 0:30] = True
    masks[2, 5, 5] = True
    feats = np.random.default_rng(0).normal(size=(3, 256)).astype(np.float32) if features else None
    graph = SceneGraph.from_masks(masks, np.array([0.9, 0.8, 0.5]), features=feats, file="x.jpg")
    names = psg.predicates()
    return graph.with_relations(
        [
            Relation(subject=0, predicate=names[3], predicate_id=3, object=1, score=0.75),
            Relation(subject=2, predicate=names[21], predicate_id=21, object=0, score=0.5),
        ]
    )


def test_rle_round_trip_is_exact():
    masks = np.random.default_rng(1).random((4, 17, 23)) > 0.5
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [17, 23] for r in rles)
    assert all(np.array_equal(decode_mask(r), m) for r, m in zip(rles, masks))


def test_torch_masks_encode_like_numpy_masks():
    """Tensors are transposed to COCO's column order on their device; the RLE is the same."""
    masks = np.random.default_rng(2).random((5, 31, 20)) > 0.3
    expected = encode_masks(masks)
    assert encode_masks(torch.from_numpy(masks)) == expected
    assert encode_masks(torch.from_numpy(masks).to(torch.uint8)) == expected
    assert encode_masks(torch.zeros(0, 31, 20, dtype=torch.bool)) == []


@pytest.mark.parametrize("shape", [(6, 17, 23), (3, 1, 9), (2, 9, 1), (2, 1, 1)])
def test_run_lengths_found_on_the_device_encode_like_pycocotools(shape):
    """The GPU path of encode_masks, run here on CPU tensors: same RLE strings."""
    from pycocotools import mask as coco_mask

    from relate_anything.masks import _device_run_lengths

    masks = np.random.default_rng(4).random(shape) > 0.5
    masks[0] = False  # starts with 0s, one run
    masks[1] = True  # starts with a 1: a leading 0-length run
    height, width = shape[1:]
    runs = [{"size": [height, width], "counts": counts} for counts in _device_run_lengths(torch.from_numpy(masks))]
    encoded = [r["counts"].decode("ascii") for r in coco_mask.frPyObjects(runs, height, width)]
    assert encoded == [r["counts"] for r in encode_masks(masks)]


def test_masks_are_encoded_a_few_at_a_time(monkeypatch):
    import relate_anything.masks as masks_module

    masks = np.random.default_rng(3).random((7, 12, 10)) > 0.5
    expected = encode_masks(masks)
    monkeypatch.setattr(masks_module, "_ENCODE_CHUNK_BYTES", 2 * 12 * 10)  # chunks of 2 masks
    assert encode_masks(masks) == encode_masks(torch.from_numpy(masks)) == expected


def test_from_masks_with_more_than_255_masks():
    masks = np.zeros((300, 8, 9), dtype=bool)
    for i in range(300):
        masks[i].flat[: 1 + i % 72] = True
    graph = SceneGraph.from_masks(masks, np.ones(300))
    assert [s.area for s in graph.segments] == [1 + i % 72 for i in range(300)]


def test_from_masks_boxes_areas_and_torch_input():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:8] = True
    masks[1, 9, 11] = True
    graph = SceneGraph.from_masks(masks, torch.tensor([0.5, 0.25], dtype=torch.bfloat16))
    assert graph.width == 12 and graph.height == 10
    assert graph.segments[0].bbox == (3.0, 2.0, 8.0, 5.0)  # pixel edges
    assert graph.segments[0].area == 15
    assert graph.segments[1].bbox == (11.0, 9.0, 12.0, 10.0)
    assert graph.segments[1].score == 0.25
    assert np.array_equal(graph.masks(), masks.numpy())


def test_json_round_trip_keeps_everything():
    graph = _graph()
    data = json.loads(graph.to_json())
    assert data["schema"] == SCHEMA
    assert data["image"] == {"width": 30, "height": 20, "file": "x.jpg"}
    assert set(data["segments"][0]) == {"id", "mask", "bbox", "area", "score", "feature"}
    assert set(data["relations"][0]) == {"subject", "predicate", "predicate_id", "object", "score"}
    back = SceneGraph.from_json(graph.to_json())
    assert back == graph
    np.testing.assert_array_equal(back.features(), graph.features())
    np.testing.assert_array_equal(back.masks(), graph.masks())


def test_image_id_round_trip():
    graph = SceneGraph(width=4, height=3, file="train2017/1.jpg", image_id="107902")
    assert graph.to_dict()["image"] == {"width": 4, "height": 3, "file": "train2017/1.jpg", "id": "107902"}
    assert SceneGraph.from_json(graph.to_json()).image_id == "107902"


def test_json_without_features(tmp_path):
    graph = _graph()
    graph.save(tmp_path / "g.json", features=False)
    back = SceneGraph.load(tmp_path / "g.json")
    assert back.features() is None and "feature" not in json.loads((tmp_path / "g.json").read_text())["segments"][0]


def test_labels_appear_in_json_and_names():
    masks = np.ones((1, 4, 4), dtype=bool)
    graph = SceneGraph.from_masks(masks, [0.9], labels=["dog"], label_scores=[0.7])
    item = graph.to_dict()["segments"][0]
    assert item["label"] == "dog" and item["label_score"] == 0.7
    assert graph.name(0) == "dog #0"


def test_networkx_export():
    nx_graph = _graph().to_networkx()
    assert isinstance(nx_graph, networkx.MultiDiGraph)
    assert sorted(nx_graph.nodes) == [0, 1, 2]
    edge = nx_graph.get_edge_data(0, 1)["on"]
    assert edge["predicate_id"] == 3 and edge["score"] == 0.75 and edge["rank"] == 0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(schema="other"), "schema"),
        (lambda d: d["relations"].append({**d["relations"][0], "object": 99}), "does not exist"),
        (lambda d: d["relations"][0].update(predicate="eating"), "not 'eating'"),
        (lambda d: d["segments"][0]["mask"].update(size=[5, 5]), "mask size"),
        (lambda d: d["segments"][1].update(id=0), "unique"),
        (lambda d: d["segments"][0].pop("bbox"), "malformed"),
    ],
)
def test_malformed_json_is_reported(mutate, message):
    data = _graph().to_dict()
    mutate(data)
    with pytest.raises(SceneGraphFormatError, match=message):
        SceneGraph.from_dict(data)


def test_not_json():
    with pytest.raises(SceneGraphFormatError, match="not valid JSON"):
        SceneGraph.from_json("{oops")


def test_psg_vocabulary_is_packaged():
    assert len(psg.predicates()) == 56 and psg.predicates()[0] == "over"
    assert len(psg.categories()) == 133 and psg.categories()[80] == "banner"
