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
    # One arrow per ordered pair, labelled by its best predicate ("+1": one more); every
    # predicate of the pair, with its score, in the arrow's tooltip.
    arrows = root.findall(f"{namespace}g[@class='relation']")
    assert len(arrows) == 3 and all(len(arrow.findall(f"{namespace}path")) == 1 for arrow in arrows)
    labels = {arrow.find(f"{namespace}text").text: arrow.find(f"{namespace}title").text for arrow in arrows}
    assert labels == {
        "holding +1": "dog #0 → stick & co #1: holding (0.90), beside (0.30)",
        "beside": "stick & co #1 → dog #0: beside (0.50)",
        "on": "dog #0 → #2: on (0.40)",
    }
    assert graph_svg(_three_segment_graph()) == svg  # the layout is seeded


def test_graph_svg_keeps_every_label_inside_the_drawing():
    """Long names are shortened (whole in the tooltip) and no text is placed outside the drawing,
    whatever the layout puts at its edges (the browser test measures the rendered page)."""
    import xml.etree.ElementTree as ElementTree

    from relate_anything import psg
    from relate_anything.visualize import graph_svg

    names = ["a very long segment name for a thing at the edge", "x", "another long name of a stuff region", "y"]
    masks = np.zeros((4, 8, 8), bool)
    for k in range(4):
        masks[k, 2 * k : 2 * k + 2] = True
    graph = SceneGraph.from_masks(masks, [0.9] * 4, labels=names)
    predicates = psg.predicates()
    relations = [
        Relation(s, p, predicates.index(p), o, 0.5)
        for s, o in [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]
        for p in ("in front of", "beside")
    ]
    root = ElementTree.fromstring(graph_svg(graph.with_relations(relations), size=300))
    namespace = "{http://www.w3.org/2000/svg}"
    for group in root.iter(f"{namespace}g"):
        text, title = group.find(f"{namespace}text"), group.find(f"{namespace}title")
        assert len(text.text) <= 20 and (text.text.endswith("…") or text.text in title.text or "+" in text.text)
        width = len(text.text) * 12 * (0.66 if group.get("class") == "segment" else 0.6)  # bold names
        left = {"start": 0, "middle": width / 2, "end": width}[text.get("text-anchor")]
        x, y = float(text.get("x")), float(text.get("y"))
        assert 0 <= x - left and x - left + width <= 300 and 12 <= y <= 300, (text.text, x, y)
    nodes = {
        group.find(f"{namespace}title").text for group in root.iter(f"{namespace}g") if group.get("class") == "segment"
    }
    assert f"{names[0]} #0" in nodes  # the whole name on hover
    assert 'style="overflow: hidden' in graph_svg(graph.with_relations(relations))


def test_graph_svg_limits_and_empty_graphs():
    from relate_anything.visualize import graph_svg

    graph = _three_segment_graph()
    assert graph_svg(graph, max_relations=1).count('class="segment"') == 2
    assert "no relations" in graph_svg(graph.with_relations([]))


def test_the_legend_says_how_many_relations_it_leaves_out(photo_and_graph):
    photo, graph = photo_and_graph
    relations = [Relation(0, "holding", 21, 1, 0.9 - k / 100) for k in range(12)]
    ten_of_ten = np.asarray(draw_scene_graph(photo, graph.with_relations(relations[:10])))
    ten_of_twelve = np.asarray(draw_scene_graph(photo, graph.with_relations(relations)))
    line = int(max(12, min(photo.shape[:2]) // 40) * 1.5)
    assert ten_of_twelve.shape[0] == ten_of_ten.shape[0] + line  # one more line: "10 of 12 relations shown; ..."
    extra = ten_of_twelve[ten_of_ten.shape[0] - line // 2 : -line // 2]
    assert (extra < 200).any()  # it holds text


def test_point_marker():
    from relate_anything.visualize import MARKER_COLOUR, draw_point_marker

    photo = np.full((200, 300, 3), 40, np.uint8)
    marked = draw_point_marker(photo, (120, 80))
    assert tuple(marked[80, 120]) == MARKER_COLOUR and tuple(marked[80, 120 + 6]) == (255, 255, 255)  # dot, ring
    assert (marked[:, :100] == 40).all() and (photo == 40).all()  # elsewhere untouched, a copy
