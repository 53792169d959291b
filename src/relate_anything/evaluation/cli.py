"""`relate-anything eval`: score predicted scene graphs against PSG ground truth.

A thin shell: load both sides as `SceneGraph`s, call `evaluate`, print tables, write JSON.
PRED and GT are each either a folder of scene-graph JSON files (`*.json`, keyed by file stem)
or a PSG-format psg.json (with its panoptic PNGs beside it), read with `PsgDataset`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from relate_anything.console import fail, stderr, stdout
from relate_anything.errors import RelateAnythingError
from relate_anything.evaluation.pairing import EvaluationError
from relate_anything.scene_graph import SceneGraph

_SPLITS = {"test": "test", "train": "train", "all": None}


def evaluate_command(
    pred: Annotated[
        Path,
        typer.Argument(
            help="Predictions: a folder of scene-graph JSON files, or a PSG-format psg.json.", show_default=False
        ),
    ],
    gt: Annotated[
        Path,
        typer.Argument(
            help="Ground truth: a PSG-format psg.json (or its folder), or a folder of scene-graph JSON files.",
            show_default=False,
        ),
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every figure to this JSON file.", show_default=False)
    ] = None,
    predcls: Annotated[
        Path | None,
        typer.Option(
            "--predcls",
            help="PredCls predictions (on the ground-truth segments), scored alongside.",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Which images of a ground-truth psg.json: test, train or all.")] = "test",
    skip_empty_predictions: Annotated[
        bool,
        typer.Option(
            "--skip-empty-predictions",
            help="Leave images without predicted relations out of R@K (OpenPSG's choice) instead of scoring them 0.",
        ),
    ] = False,
    per_predicate: Annotated[
        bool, typer.Option("--per-predicate/--no-per-predicate", help="Print the per-predicate recall table.")
    ] = True,
) -> None:
    """Score PRED against GT: SGDet R@K / mR@K (plain and one mask per object), PQ, and PredCls."""
    from relate_anything.evaluation.metrics import evaluate

    if split not in _SPLITS:
        raise typer.BadParameter(f"expected test, train or all, got {split!r}", param_hint="--split")
    try:
        ground_truth = load_graphs(gt, split=_SPLITS[split])
        if not ground_truth:
            raise EvaluationError(f"{gt}: no ground-truth image with relations in split {split!r} (try --split all)")
        predictions = load_graphs(pred, split=None)
        predcls_predictions = None if predcls is None else load_graphs(predcls, split=None)
        report = evaluate(
            predictions, ground_truth, predcls=predcls_predictions, skip_empty_predictions=skip_empty_predictions
        )
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report, indent=2))
    except RelateAnythingError as error:
        fail(error)
    except OSError as error:
        fail(EvaluationError(str(error)))
    print_report(report, per_predicate=per_predicate)


def load_graphs(path: Path, *, split: str | None) -> list[SceneGraph] | dict[str, SceneGraph]:
    """Scene graphs from a folder of JSON files ({stem: graph}) or a PSG psg.json (a list).

    A folder holding psg.json counts as a PSG dataset; `split` ("test", "train", None = all)
    applies to PSG datasets only.
    """
    if path.is_dir() and not (path / "psg.json").is_file():
        files = sorted(path.glob("*.json"))
        if not files:
            raise EvaluationError(f"{path}: no *.json scene graphs in this folder")
        return {file.stem: _load_graph(file) for file in files}
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or folder")
    json_path = path / "psg.json" if path.is_dir() else path
    if _is_scene_graph(json_path):
        return {json_path.stem: _load_graph(json_path)}
    from relate_anything.datasets.psg import PsgDataset

    return list(PsgDataset(json_path, split=split))


def print_report(report: dict[str, Any], *, per_predicate: bool = True, console: Console | None = None) -> None:
    """The report as rich tables: recalls per mode, PQ, and the per-predicate recalls (in %)."""
    console = console or stdout
    modes = [m for m in ("sgdet", "sgdet_one_mask_per_object", "predcls") if m in report]
    metric_names = list(report[modes[0]])
    table = Table(title=f"Scene-graph recall (%), {report['images']} images")
    table.add_column("mode")
    for name in metric_names:
        table.add_column(name, justify="right")
    for mode in modes:
        table.add_row(mode, *(f"{100 * report[mode][name]:.2f}" for name in metric_names))
    console.print(table)
    if "pq" in report:
        pq = report["pq"]
        pq_table = Table(title=f"Panoptic quality (%), {pq['categories']} categories")
        for name in ("", "_things", "_stuff"):
            for kind in ("PQ", "SQ", "RQ"):
                pq_table.add_column(kind + name, justify="right")
        pq_table.add_row(
            *(f"{100 * pq[kind + name]:.2f}" for name in ("", "_things", "_stuff") for kind in ("PQ", "SQ", "RQ"))
        )
        console.print(pq_table)
    if per_predicate:
        rows = {name: row for name, row in report["per_predicate"].items() if row["images"] > 0}
        columns = [c for c in next(iter(report["per_predicate"].values()), {}) if c != "images"]
        absent = len(report["per_predicate"]) - len(rows)
        per_table = Table(
            title=f"Per-predicate recall (%), {modes[0]}",
            caption=f"{absent} predicates absent from the ground truth count 0 in mR@K" if absent else None,
        )
        per_table.add_column("predicate")
        for column in columns:
            per_table.add_column(column, justify="right")
        per_table.add_column("images", justify="right")
        for name, row in rows.items():
            per_table.add_row(name, *(f"{100 * row[c]:.2f}" for c in columns), str(row["images"]))
        console.print(per_table)
    protocol = report["protocol"]
    console.print(f"empty predictions: {protocol['missing_predictions']}", highlight=False)
    for warning in report["warnings"]:
        stderr.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _is_scene_graph(path: Path) -> bool:
    try:
        with path.open() as handle:
            head = handle.read(4096)
    except OSError as error:
        raise EvaluationError(f"{path}: cannot read ({error.strerror})") from None
    return '"relate-anything/scene-graph/' in head


def _load_graph(path: Path) -> SceneGraph:
    try:
        return SceneGraph.load(path)
    except RelateAnythingError as error:
        raise EvaluationError(f"{path}: {error}") from None
