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
    untouched = (20, 700)
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
