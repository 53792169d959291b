"""`relate-anything data ...`: check a PSG-format dataset, or write a synthetic one.

A thin shell over `relate_anything.datasets`; errors the user can fix are one message and an
exit code, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from relate_anything.console import EXIT_INPUTS, HelpCommand, epilog, fail, stdout
from relate_anything.errors import RelateAnythingError

app = typer.Typer(
    help="PSG-format datasets: check one, or write a synthetic one.",
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
        Path, typer.Argument(help="Folder holding psg.json (or the JSON file itself).", show_default=False)
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
    """List every problem of a PSG dataset, one line per problem (exit code 4 when there is any)."""
    from relate_anything.datasets.psg import check_records, psg_paths, read_psg_json

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
