"""Pictures of scene graphs: masks over the photo, the top relations highlighted, a legend.

Segments taking part in the shown relations are drawn in strong colours with outlines and
their names at their centres; every other segment is a faint tint, so the picture reads as
"who relates to whom" rather than as a mosaic. Below the photo, a legend lists the triplets with
the subject's and object's colours.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from relate_anything.scene_graph import SceneGraph


def segment_colour(segment_id: int, *, brightness: float = 0.95) -> tuple[int, int, int]:
    """A stable, well-separated colour for a segment id (golden-ratio hue steps)."""
    hue = (segment_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, brightness)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_scene_graph(image: np.ndarray, graph: SceneGraph, *, max_relations: int = 10) -> Image.Image:
    """Render `graph` over `image` (RGB uint8 [H, W, 3]) with a legend of its top relations.

    Args:
        image: the photo the graph was built from (same width and height).
        graph: the scene graph.
        max_relations: how many of the best relations to highlight and list.
    """
    if image.shape[:2] != (graph.height, graph.width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, graph is {graph.width}x{graph.height}")
    shown = graph.relations[:max_relations]
    involved = {r.subject for r in shown} | {r.object for r in shown}
    masks = graph.masks()
    canvas = image.astype(np.float32)
    # Faint tint for context first, then the involved segments on top, largest first so small
    # objects stay visible.
    order = sorted(range(len(graph.segments)), key=lambda i: -graph.segments[i].area)
    for index in order:
        segment = graph.segments[index]
        alpha = 0.55 if segment.id in involved else 0.18
        colour = np.array(segment_colour(segment.id), dtype=np.float32)
        region = masks[index]
        canvas[region] = canvas[region] * (1 - alpha) + colour * alpha
    for index in order:
        segment = graph.segments[index]
        if segment.id in involved:
            outline = masks[index] & ~ndimage.binary_erosion(masks[index], iterations=2)
            canvas[outline] = segment_colour(segment.id)
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    font_size = max(12, min(graph.width, graph.height) // 40)
    font = ImageFont.load_default(size=font_size)
    draw = ImageDraw.Draw(picture)
    for index, segment in enumerate(graph.segments):
        if segment.id in involved:
            _label_at_centre(draw, masks[index], graph.name(segment.id), font)
    return _with_legend(picture, graph, shown, font)


def _label_at_centre(draw: ImageDraw.ImageDraw, mask: np.ndarray, text: str, font: ImageFont.ImageFont) -> None:
    # The pixel of the mask farthest from its border is inside even for concave shapes.
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    draw.text((int(x), int(y)), text, fill="white", font=font, anchor="mm", stroke_width=2, stroke_fill="black")


def _with_legend(picture: Image.Image, graph: SceneGraph, relations: list, font: ImageFont.ImageFont) -> Image.Image:
    line_height = int(font.size * 1.5)
    lines = relations or [None]
    legend_height = line_height * len(lines) + line_height // 2
    result = Image.new("RGB", (picture.width, picture.height + legend_height), "white")
    result.paste(picture, (0, 0))
    draw = ImageDraw.Draw(result)
    top = picture.height + line_height // 4
    if relations == []:
        draw.text((8, top), "no relations", fill="black", font=font)
        return result
    for rank, relation in enumerate(relations):
        x = 8
        y = top + rank * line_height
        parts = [
            (f"{rank + 1}. ", (0, 0, 0)),
            # Darker shades of the mask colours: readable on the white legend.
            (graph.name(relation.subject), segment_colour(relation.subject, brightness=0.6)),
            (f" {relation.predicate} ", (0, 0, 0)),
            (graph.name(relation.object), segment_colour(relation.object, brightness=0.6)),
            (f"  {relation.score:.2f}", (110, 110, 110)),
        ]
        for text, colour in parts:
            draw.text((x, y), text, fill=colour, font=font)
            x += int(draw.textlength(text, font=font))
    return result
