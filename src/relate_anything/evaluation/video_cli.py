"""`relate-anything eval-video`: score predicted video scene graphs against PVSG ground truth.

A thin shell: read PRED (a folder of `VideoSceneGraph` JSON files, keyed by file stem) and GT
(a PVSG folder: pvsg.json and its mask PNGs), call `evaluate_video`, print tables, write JSON.
Ground-truth videos are read a few at a time while earlier ones are scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from relate_anything.console import fail, stderr, stdout
from relate_anything.errors import RelateAnythingError
from relate_anything.evaluation.pairing import EvaluationError
from relate_anything.video_scene_graph import VideoSceneGraph

_SPLITS = {"val": "val", "train": "train", "all": None}


def evaluate_video_command(
    pred: Annotated[
        Path,
        typer.Argument(
            help="Predictions: a folder of video scene-graph JSON files (one per video).", show_default=False
        ),
    ],
    gt: Annotated[
        Path, typer.Argument(help="Ground truth: a PVSG folder (pvsg.json and its mask PNGs).", show_default=False)
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every figure to this JSON file.", show_default=False)
    ] = None,
    split: Annotated[
        str, typer.Option(help="Which ground-truth videos: val (PVSG's test split), train or all.")
    ] = "val",
    map_predicate: Annotated[
        list[str] | None,
        typer.Option(
            "--map-predicate",
            help='Score a predicted predicate as a ground-truth one, e.g. "beside=next to" (repeatable; '
            "PSG's drinking and slicing map to drinking from and cutting by default).",
            show_default=False,
        ),
    ] = None,
    per_predicate: Annotated[
        bool, typer.Option("--per-predicate/--no-per-predicate", help="Print the per-predicate recall table.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Threads reading mask PNGs (default: one per CPU).")
    ] = None,
) -> None:
    """Score PRED against GT with PVSG's protocol: R@K / mR@K (vIoU >= 0.5), weak, soft, class-agnostic."""
    from relate_anything.datasets.pvsg import PvsgDataset
    from relate_anything.evaluation.video import VideoEvalSettings, evaluate_video

    if split not in _SPLITS:
        raise typer.BadParameter(f"expected val, train or all, got {split!r}", param_hint="--split")
    settings = VideoEvalSettings(predicate_map=_parse_maps(map_predicate or []))
    try:
        predictions = load_video_graphs(pred)
        dataset = PvsgDataset(gt, split=_SPLITS[split], workers=workers)
        if not len(dataset):
            raise EvaluationError(f"{gt}: no ground-truth video in split {split!r} (try --split all)")
        report = evaluate_video(predictions, _read_ahead(dataset), settings=settings, categories=dataset.categories)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report, indent=2))
    except RelateAnythingError as error:
        fail(error)
    except OSError as error:
        fail(EvaluationError(str(error)))
    print_video_report(report, per_predicate=per_predicate)


def load_video_graphs(path: Path) -> dict[str, VideoSceneGraph]:
    """{file stem: graph} from a folder of video scene-graph JSON files (or one such file)."""
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise EvaluationError(f"{path}: no *.json video scene graphs in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise EvaluationError(f"{path}: no such file or folder")
    graphs = {}
    for file in files:
        try:
            graphs[file.stem] = VideoSceneGraph.load(file)
        except RelateAnythingError as error:
            raise EvaluationError(f"{file}: {error}") from None
        except UnicodeDecodeError:
            raise EvaluationError(f"{file}: not a text file, so not a video scene graph") from None
    return graphs


def _parse_maps(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise typer.BadParameter(f'expected "predicted=ground truth", got {item!r}', param_hint="--map-predicate")
        result[source.strip()] = target.strip()
    return result


def _read_ahead(dataset, ahead: int = 2) -> Iterator[tuple[str, VideoSceneGraph]]:
    """(video id, graph) of every video, the next `ahead` read in the background."""
    with ThreadPoolExecutor(1) as pool:
        pending = [pool.submit(dataset.__getitem__, i) for i in range(min(ahead, len(dataset)))]
        for index in range(len(dataset)):
            graph = pending.pop(0).result()
            if index + ahead < len(dataset):
                pending.append(pool.submit(dataset.__getitem__, index + ahead))
            yield dataset.video_ids[index], graph


def print_video_report(report: dict[str, Any], *, per_predicate: bool = True, console: Console | None = None) -> None:
    """The report as rich tables (recalls in %) and its counts and warnings."""
    console = console or stdout
    rows = {
        "vIoU >= 0.5": "recall",
        "weak (vIoU >= 0.1)": "weak_recall",
        "soft (vIoU-weighted)": "soft_recall",
        "class-agnostic": "class_agnostic",
    }
    columns = list(report["recall"])
    table = Table(title=f"PVSG relation recall (%), {report['videos']} videos, {report['relations']} relations")
    table.add_column("protocol")
    for name in columns:
        table.add_column(name, justify="right")
    for label, key in rows.items():
        table.add_row(label, *(f"{100 * report[key][name]:.2f}" for name in columns))
    console.print(table)
    if per_predicate and report["per_predicate"]:
        shown = [f"R@{k}" for k in report["protocol"]["ks"]]
        per_table = Table(title="Per-predicate recall (%), vIoU >= 0.5")
        per_table.add_column("predicate", no_wrap=True)
        for column in shown:
            per_table.add_column(column, justify="right")
        per_table.add_column("relations", justify="right")
        for name, row in report["per_predicate"].items():
            per_table.add_row(name, *(f"{100 * row[c]:.2f}" for c in shown), str(row["relations"]))
        console.print(per_table)
    counts = report["counts"]
    console.print(
        f"predictions: {counts['predictions']}, videos without one: {len(counts['missing_predictions'])}, "
        f"predicted relations: {counts['predicted_relations']}, with no ground-truth predicate: "
        f"{counts['unmapped_predicate_relations']}",
        highlight=False,
    )
    for warning in report["warnings"]:
        stderr.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
