"""Pictures of scene graphs: masks over the photo, the top relations highlighted, a legend.

Segments taking part in the shown relations are drawn in strong colours with outlines and
their names at their centres; every other segment is a faint tint, so the picture reads as
"who relates to whom" rather than as a mosaic. Below the photo, a legend lists the triplets with
the subject's and object's colours.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Collection

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from relate_anything.scene_graph import SceneGraph


def segment_colour(segment_id: int, *, brightness: float = 0.95) -> tuple[int, int, int]:
    """A stable, well-separated colour for a segment id (golden-ratio hue steps)."""
    hue = (segment_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, brightness)
    return int(red * 255), int(green * 255), int(blue * 255)


def segment_hex_colour(segment_id: int, *, brightness: float = 0.95) -> str:
    """`segment_colour` as "#rrggbb"."""
    return "#{:02x}{:02x}{:02x}".format(*segment_colour(segment_id, brightness=brightness))


def draw_scene_graph(image: np.ndarray, graph: SceneGraph, *, max_relations: int = 10) -> Image.Image:
    """Render `graph` over `image` (RGB uint8 [H, W, 3]) with a legend of its top relations.

    Args:
        image: the photo the graph was built from (same width and height).
        graph: the scene graph.
        max_relations: how many of the best relations to highlight and list.
    """
    shown = graph.relations[:max_relations]
    involved = {r.subject for r in shown} | {r.object for r in shown}
    font = ImageFont.load_default(size=font_size(graph.width, graph.height))
    picture = draw_segments(image, graph, highlight=involved, labelled=involved, font=font)
    return _with_legend(picture, graph, shown, font, total=len(graph.relations))


def font_size(width: int, height: int) -> int:
    """Text size in pixels for a picture of this size: readable on a phone photo and on 4K."""
    return max(12, min(width, height) // 40)


def draw_segments(
    image: np.ndarray,
    graph: SceneGraph,
    *,
    highlight: Collection[int],
    labelled: Collection[int],
    font: ImageFont.FreeTypeFont,
    faint: float = 0.18,
) -> Image.Image:
    """The masks of `graph` over `image` (RGB uint8 [H, W, 3], the graph's size), same size.

    Segments in `highlight` get a strong tint of `segment_colour(id)` and an outline; the others
    a faint tint (alpha `faint`). Segments in `labelled` get their name at the pixel deepest
    inside their mask. Work is done inside each mask's box, so a frame with many small
    segments draws fast.
    """
    if image.shape[:2] != (graph.height, graph.width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, graph is {graph.width}x{graph.height}")
    masks = graph.masks()
    boxes = [_box(segment.bbox, graph.width, graph.height) for segment in graph.segments]
    canvas = image.astype(np.float32)
    # Faint tint for context first, then the highlighted segments on top, largest first so
    # small objects stay visible.
    order = sorted(range(len(graph.segments)), key=lambda i: -graph.segments[i].area)
    for index in order:
        segment = graph.segments[index]
        alpha = 0.55 if segment.id in highlight else faint
        colour = np.array(segment_colour(segment.id), dtype=np.float32)
        box = boxes[index]
        crop = canvas[box]
        # copyto with a mask is several times faster than boolean indexing on large regions.
        np.copyto(crop, crop * (1 - alpha) + colour * alpha, where=masks[index][box][:, :, None])
    for index in order:
        segment = graph.segments[index]
        if segment.id in highlight:
            box = boxes[index]
            mask = masks[index][box]
            outline = mask & ~ndimage.binary_erosion(mask, iterations=2)
            np.copyto(canvas[box], np.array(segment_colour(segment.id), np.float32), where=outline[:, :, None])
    picture = Image.fromarray(np.clip(canvas, 0, 255, out=canvas).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for index, segment in enumerate(graph.segments):
        if segment.id in labelled:
            _label_at_centre(draw, masks[index], boxes[index], graph.name(segment.id), font)
    return picture


def _box(bbox: tuple[float, float, float, float], width: int, height: int) -> tuple[slice, slice]:
    """Row and column slices around a box (pixel edges), one pixel wider on each side: the mask
    is background all round it, so erosion and distance transforms inside it equal those on the
    whole image."""
    x0, y0, x1, y1 = bbox
    return (
        slice(max(0, math.floor(y0) - 1), min(height, math.ceil(y1) + 1)),
        slice(max(0, math.floor(x0) - 1), min(width, math.ceil(x1) + 1)),
    )


def _label_at_centre(
    draw: ImageDraw.ImageDraw, mask: np.ndarray, box: tuple[slice, slice], text: str, font: ImageFont.ImageFont
) -> None:
    # The pixel of the mask farthest from its border is inside even for concave shapes. Large
    # masks are searched on a grid of at most 256 x 256 of their pixels (a label needs no more).
    crop = mask[box]
    step = max(1, math.ceil(max(crop.shape) / 256))
    grid = crop[::step, ::step]
    if not grid.any():
        step, grid = 1, crop
    if not grid.any():
        return
    distance = ndimage.distance_transform_edt(np.pad(grid, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    cx, cy = box[1].start + int(x) * step, box[0].start + int(y) * step
    # Kept inside the picture: a narrow mask at the edge would otherwise cut its name.
    left, top, right, bottom = draw.textbbox((cx, cy), text, font=font, anchor="mm", stroke_width=2)
    width, height = draw.im.size
    cx += max(0, -left) - max(0, right - width) if right - left <= width else -left
    cy += max(0, -top) - max(0, bottom - height) if bottom - top <= height else -top
    draw.text((cx, cy), text, fill="white", font=font, anchor="mm", stroke_width=2, stroke_fill="black")


def _with_legend(
    picture: Image.Image, graph: SceneGraph, relations: list, font: ImageFont.ImageFont, *, total: int
) -> Image.Image:
    """`picture` over a legend of `relations` (the first of `total`; a last line says how many
    more the graph holds)."""
    line_height = int(font.size * 1.5)
    lines = (relations or [None]) + ([None] if total > len(relations) else [])
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
    if total > len(relations):
        more = f"{len(relations)} of {total} relations shown; the JSON has all {total}"
        draw.text((8, top + len(relations) * line_height), more, fill=(110, 110, 110), font=font)
    return result


def draw_point_marker(image: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """A copy of `image` (RGB uint8 [H, W, 3]) with a marker at `point` (x, y in pixels): a red
    dot in a white ring, sized to the photo, so a click stays visible over any colour."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    x, y = point
    radius = _marker_radius(picture.height, picture.width)
    draw.ellipse((x - radius - 2, y - radius - 2, x + radius + 2, y + radius + 2), fill="white")
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=MARKER_COLOUR)
    return np.asarray(picture)


def point_marker_mask(height: int, width: int, point: tuple[float, float]) -> np.ndarray:
    """[H, W] bool: a dot at `point` (x, y in pixels) and a ring around it, the shape of
    `draw_point_marker`, for pictures that draw masks over the photo (the web UI's)."""
    radius = _marker_radius(height, width)
    rows, columns = np.ogrid[:height, :width]
    distance = np.hypot(columns - point[0], rows - point[1])
    return (distance <= radius * 0.6) | ((distance >= radius) & (distance <= radius + 2.5))


def _marker_radius(height: int, width: int) -> int:
    return max(5, min(height, width) // 80)


#: The colour of `draw_point_marker`'s dot.
MARKER_COLOUR = (230, 25, 75)


def graph_svg(graph: SceneGraph, *, max_relations: int = 20, size: int = 480) -> str:
    """The top relations as a node-link diagram in SVG: segments as coloured nodes (the colours
    of `draw_scene_graph`), relations as arrows from subject to object labelled by predicate.

    Everything stays inside the drawing (size x size), so the diagram never runs over the page
    around it: relations between the same two segments share one arrow, labelled by its best
    predicate ("holding +2" when there are more); long names are shortened with "…". Hovering an
    arrow or a node shows its full text (an SVG <title>): every predicate of the pair with its
    score, the segment's whole name.

    Args:
        graph: the scene graph.
        max_relations: how many of the best relations to draw.
        size: width and height of the drawing in pixels.
    """
    from xml.sax.saxutils import escape

    import networkx

    shown = graph.relations[:max_relations]
    if not shown:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="60"><text x="10" y="35" font-family="sans-serif" font-size="14">no relations</text></svg>'
    pairs: dict[tuple[int, int], list] = {}
    for relation in shown:
        pairs.setdefault((relation.subject, relation.object), []).append(relation)
    layout_graph = networkx.Graph(list(pairs))
    # A seeded layout: the same graph is drawn the same way every time.
    positions = networkx.spring_layout(layout_graph, seed=0, k=1.6 / max(1, len(layout_graph)) ** 0.5)
    margin, radius = 70, 16
    xs = [p[0] for p in positions.values()]
    ys = [p[1] for p in positions.values()]
    span_x, span_y = max(max(xs) - min(xs), 1e-6), max(max(ys) - min(ys), 1e-6)

    def place(node: int) -> tuple[float, float]:
        x, y = positions[node]
        return margin + (x - min(xs)) / span_x * (size - 2 * margin), margin + (y - min(ys)) / span_y * (
            size - 2 * margin
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
        f'font-family="sans-serif" font-size="{_SVG_FONT_SIZE}" role="img" aria-label="scene graph" '
        'style="overflow: hidden; max-width: 100%; height: auto">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for (subject, object_), relations in pairs.items():
        (x0, y0), (x1, y1) = place(subject), place(object_)
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-6)
        # Arrows stop at the node circles; a pair related both ways gets two slightly bent lines.
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        normal = (-uy, ux)  # the side this arrow bends to and writes its label on
        bend = 28 if (object_, subject) in pairs else 0
        start = (x0 + ux * radius, y0 + uy * radius)
        end = (x1 - ux * (radius + 2), y1 - uy * (radius + 2))
        control = ((start[0] + end[0]) / 2 + normal[0] * bend, (start[1] + end[1]) / 2 + normal[1] * bend)
        middle = ((start[0] + 2 * control[0] + end[0]) / 4, (start[1] + 2 * control[1] + end[1]) / 4)
        anchor = "middle" if abs(normal[0]) < 0.3 else ("start" if normal[0] > 0 else "end")
        label = _shortened(relations[0].predicate, 16) + (f" +{len(relations) - 1}" if len(relations) > 1 else "")
        x, y = _inside(middle[0] + normal[0] * 8, middle[1] + normal[1] * 8 + 4, label, anchor, size)
        title = f"{graph.name(subject)} → {graph.name(object_)}: " + ", ".join(
            f"{r.predicate} ({r.score:.2f})" for r in relations
        )
        parts.append(
            f'<g class="relation" data-subject="{subject}" data-object="{object_}"><title>{escape(title)}</title>'
            f'<path d="M {start[0]:.1f} {start[1]:.1f} Q {control[0]:.1f} {control[1]:.1f} {end[0]:.1f} {end[1]:.1f}" '
            'fill="none" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>'
            f'<text class="predicate" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="#222" '
            f'stroke="white" stroke-width="3" paint-order="stroke">{escape(label)}</text></g>'
        )
    for node in layout_graph.nodes:
        cx, cy = place(node)
        name = graph.name(node)
        label = _shortened(name, 18)
        x, y = _inside(cx, cy + 4, label, "middle", size, bold=True)
        parts.append(
            f'<g class="segment" data-segment="{node}"><title>{escape(name)}</title>'
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{segment_hex_colour(node, brightness=0.95)}" '
            f'stroke="{segment_hex_colour(node, brightness=0.5)}" stroke-width="2"/>'
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" fill="black" stroke="white" stroke-width="3" '
            f'paint-order="stroke" font-weight="bold">{escape(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


_SVG_FONT_SIZE = 12


def _shortened(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with "…" when longer."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _inside(x: float, y: float, text: str, anchor: str, size: int, *, bold: bool = False) -> tuple[float, float]:
    """The anchor point (x, baseline y) of `text` moved so that the whole text lies inside the
    size x size drawing, its width estimated from the font size (sans-serif averages ~0.6 em a
    character, bold ~0.66)."""
    width = len(text) * _SVG_FONT_SIZE * (0.66 if bold else 0.6)
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    x += max(0.0, 3 - left) - max(0.0, left + width - (size - 3))
    y = min(max(y, _SVG_FONT_SIZE + 2), size - 4)
    return x, y
