"""`relate-anything data ...`: check a PSG- or PVSG-format dataset, or write a synthetic one.

A thin shell over `relate_anything.datasets`; errors the user can fix are one message and an
exit code, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.console import EXIT_INPUTS, HelpCommand, epilog, fail, stdout
from relate_anything.errors import RelateAnythingError

app = typer.Typer(
    help="PSG (image) and PVSG (video) datasets: check one, or write a synthetic one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help, readable at 80 columns (console.HelpCommand)
)


@app.command(
    cls=HelpCommand,
    epilog=epilog(
        "relate-anything data check /data/psg", "relate-anything data check psg.json --images-root /data/coco"
    ),
)
def check(
    dataset: Annotated[
        Path,
        typer.Argument(help="Folder holding psg.json or pvsg.json (or the JSON file itself).", show_default=False),
    ],
    images_root: Annotated[
        Path | None,
        typer.Option(help="Folder file_name is relative to (default: the JSON's folder).", show_default=False),
    ] = None,
    panoptic_root: Annotated[
        Path | None,
        typer.Option(help="Folder pan_seg_file_name is relative to (default: the images root).", show_default=False),
    ] = None,
) -> None:
    """List every problem of a PSG or PVSG dataset, one line per problem (exit code 4 when there is any)."""
    from relate_anything.datasets.psg import check_records, psg_paths, read_psg_json

    if _is_pvsg(dataset):
        _check_pvsg(dataset)
        return

    try:
        json_path, images, panoptic = psg_paths(dataset, images_root=images_root, panoptic_root=panoptic_root)
        meta = read_psg_json(json_path)
        problems = check_records(meta, images_root=images, panoptic_root=panoptic)
    except RelateAnythingError as error:
        fail(error)
    for problem in problems:
        stdout.print(str(problem), markup=False)
    records = [r for r in meta["data"] if isinstance(r, dict)]
    relations = sum(len(r["relations"]) for r in records if isinstance(r.get("relations"), list))
    stdout.print(f"{len(meta['data'])} images, {relations} relations, {len(problems)} problems", markup=False)
    if problems:
        raise typer.Exit(code=EXIT_INPUTS)


@app.command(
    cls=HelpCommand,
    epilog=epilog(
        "relate-anything data synth --out synth/ --images 200 --seed 0",
        "relate-anything data synth --out synth/ --photos tests/data/images",
    ),
)
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write psg.json, images/ and panoptic/ to.", show_default=False)],
    images: Annotated[int, typer.Option(min=1, help="Number of images (about 10% go to test_image_ids).")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same files.")] = 0,
    photos: Annotated[
        Path | None, typer.Option(help="Folder of photos to texture the backgrounds with.", show_default=False)
    ] = None,
) -> None:
    """Write a synthetic PSG dataset whose relations follow from its geometry."""
    from relate_anything.datasets.psg import read_psg_json
    from relate_anything.datasets.synthetic import make_synthetic_psg

    if photos is not None and not photos.is_dir():
        raise typer.BadParameter(f"{photos} is not a folder", param_hint="--photos")
    try:
        path = make_synthetic_psg(out, images=images, seed=seed, photos_dir=photos)
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error), param_hint="--photos") from None
    meta = read_psg_json(path)
    relations = sum(len(r["relations"]) for r in meta["data"])
    stdout.print(
        f"wrote {path}: {images} images ({len(meta['test_image_ids'])} test), {relations} relations", markup=False
    )


def _is_pvsg(dataset: Path) -> bool:
    """A folder holding pvsg.json (and no psg.json), or a JSON file whose top level has PVSG's
    `objects` {thing, stuff} rather than PSG's `thing_classes`."""
    if dataset.is_dir():
        return (dataset / "pvsg.json").is_file() and not (dataset / "psg.json").is_file()
    if dataset.name.startswith("pvsg"):
        return True
    try:
        meta = json.loads(dataset.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # the PSG reader reports it
    return isinstance(meta, dict) and isinstance(meta.get("objects"), dict) and "thing_classes" not in meta


def _check_pvsg(dataset: Path) -> None:
    from relate_anything.datasets.pvsg import check_pvsg, read_pvsg_json

    try:
        meta = read_pvsg_json(dataset)
        problems = check_pvsg(dataset)
    except RelateAnythingError as error:
        fail(error)
    for problem in problems:
        stdout.print(str(problem), markup=False)
    videos = [v for v in meta["data"] if isinstance(v, dict)]
    relations = sum(len(v["relations"]) for v in videos if isinstance(v.get("relations"), list))
    stdout.print(f"{len(meta['data'])} videos, {relations} relations, {len(problems)} problems", markup=False)
    if problems:
        raise typer.Exit(code=1)


@app.command(
    "synth-video",
    cls=HelpCommand,
    epilog=epilog(
        "relate-anything data synth-video --out synth/ --videos 10 --frames 50",
        "relate-anything data synth-video --out masks-only/ --no-videos",
    ),
)
def synth_video(
    out: Annotated[
        Path,
        typer.Option(help="Folder to write pvsg.json, synthetic/masks/ and synthetic/videos/ to.", show_default=False),
    ],
    videos: Annotated[int, typer.Option(min=1, help="Number of clips (about 20% go to the val split).")] = 4,
    frames: Annotated[int, typer.Option(min=2, help="Sampled frames per clip.")] = 30,
    seed: Annotated[int, typer.Option(min=0, help="Random seed: the same seed writes the same files.")] = 0,
    width: Annotated[int, typer.Option(min=64, help="Frame width in pixels.")] = 320,
    height: Annotated[int, typer.Option(min=64, help="Frame height in pixels.")] = 240,
    fps: Annotated[float, typer.Option(min=0.1, help="Frame rate of the clips (PVSG: 5).")] = 5.0,
    no_videos: Annotated[
        bool, typer.Option("--no-videos", help="Write pvsg.json and the mask PNGs only, not the clips.")
    ] = False,
) -> None:
    """Write a synthetic PVSG dataset of moving shapes whose relations follow from their geometry."""
    from relate_anything.datasets.pvsg import read_pvsg_json
    from relate_anything.datasets.synthetic_video import make_synthetic_pvsg

    try:
        path = make_synthetic_pvsg(
            out, videos=videos, frames=frames, seed=seed, size=(width, height), fps=fps, write_videos=not no_videos
        )
    except RelateAnythingError as error:
        fail(error)
    meta = read_pvsg_json(path)
    relations = sum(len(v["relations"]) for v in meta["data"])
    val = sum(len(parts.get("val", [])) for parts in meta["split"].values())
    stdout.print(f"wrote {path}: {videos} videos of {frames} frames ({val} val), {relations} relations", markup=False)
