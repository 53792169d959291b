import numpy as np
import pytest

from relate_anything import Relation, SceneGraph
from relate_anything.image_io import load_image
from relate_anything.visualize import draw_scene_graph, segment_colour


@pytest.fixture
def photo_and_graph(dog_jpg):
    photo = load_image(dog_jpg)
    height, width = photo.shape[:2]
    masks = np.zeros((3, height, width), dtype=bool)
    masks[0, 100:300, 100:300] = True
    masks[1, 100:300, 400:600] = True
    masks[2, 400:500, 50:150] = True  # takes part in no relation
    graph = SceneGraph.from_masks(masks, [0.9, 0.8, 0.7], labels=["dog", "stick", None])
    return photo, graph.with_relations([Relation(0, "holding", 21, 1, 0.8)])


def test_picture_is_the_photo_plus_a_legend(photo_and_graph):
    photo, graph = photo_and_graph
    picture = np.asarray(draw_scene_graph(photo, graph))
    assert picture.shape[1] == photo.shape[1] and picture.shape[0] > photo.shape[0]
    assert np.all(picture[photo.shape[0] + 2 :, -5:] == 255)  # legend background on the right edge


def test_related_segments_are_highlighted_others_faint(photo_and_graph):
    photo, graph = photo_and_graph
    picture = np.asarray(draw_scene_graph(photo, graph)).astype(int)
    untouched = (20, 620)
    assert np.array_equal(picture[untouched], photo[untouched])

    def shift_towards_colour(y, x, segment_id):
        colour = np.array(segment_colour(segment_id))
        return np.abs(photo[y, x].astype(int) - colour).sum() - np.abs(picture[y, x] - colour).sum()

    strong = shift_towards_colour(120, 120, 0)
    faint = shift_towards_colour(420, 60, 2)
    assert strong > 2 * faint > 0


def test_image_size_must_match(photo_and_graph):
    photo, graph = photo_and_graph
    with pytest.raises(ValueError, match="image is"):
        draw_scene_graph(photo[:100], graph)


def test_graph_without_relations(photo_and_graph):
    photo, graph = photo_and_graph
    picture = draw_scene_graph(photo, graph.with_relations([]))
    assert picture.height > photo.shape[0]


def _three_segment_graph() -> SceneGraph:
    from relate_anything import psg

    masks = np.zeros((3, 20, 20), bool)
    masks[0, :5], masks[1, 5:10], masks[2, 10:] = True, True, True
    graph = SceneGraph.from_masks(
        masks, [0.9, 0.8, 0.7], labels=["dog", "stick & co", None], label_scores=[0.5, 0.5, None]
    )
    names = psg.predicates()
    triplets = [(0, "holding", 1, 0.9), (1, "beside", 0, 0.5), (0, "on", 2, 0.4), (0, "beside", 1, 0.3)]
    return graph.with_relations([Relation(s, p, names.index(p), o, c) for s, p, o, c in triplets])


def test_graph_svg_draws_segments_as_nodes_and_relations_as_labelled_arrows():
    import xml.etree.ElementTree as ElementTree

    from relate_anything.visualize import graph_svg

    svg = graph_svg(_three_segment_graph())
    root = ElementTree.fromstring(svg)  # well-formed, names escaped ("stick & co")
    namespace = "{http://www.w3.org/2000/svg}"
    nodes = root.findall(f"{namespace}g[@class='segment']")
    assert sorted(n.get("data-segment") for n in nodes) == ["0", "1", "2"]
    assert {n.find(f"{namespace}text").text for n in nodes} == {"dog #0", "stick & co #1", "#2"}
    # One arrow per ordered pair; the predicates of a pair share its label, best first.
    labels = [t.text for t in root.findall(f"{namespace}text[@class='predicate']")]
    assert sorted(labels) == ["beside", "holding, beside", "on"]
    assert len(root.findall(f"{namespace}path")) == 3  # direct children: the arrows (the arrowhead is in defs)
    assert graph_svg(_three_segment_graph()) == svg  # the layout is seeded


def test_graph_svg_limits_and_empty_graphs():
    from relate_anything.visualize import graph_svg

    graph = _three_segment_graph()
    assert graph_svg(graph, max_relations=1).count('class="segment"') == 2
    assert "no relations" in graph_svg(graph.with_relations([]))
