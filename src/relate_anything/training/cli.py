"""`relate-anything collect` and `relate-anything train`: thin shells over `collect` and `train`.

Register them on the main Typer app with `app.command("collect")(collect_command)` and
`app.command("train")(train_command)`. Errors the user can fix are printed as one message with a
non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from relate_anything.console import (
    DeviceOption,
    DtypeOption,
    RamOption,
    SamOption,
    handles_errors,
    print_loaded,
    progress_bar,
    progress_callback,
    segment_settings_options,
    stderr,
)
from relate_anything.errors import UsageError
from relate_anything.settings import SegmentSettings


@segment_settings_options
@handles_errors
def collect_command(
    data: Annotated[
        Path,
        typer.Argument(help="PSG-format dataset: a folder with psg.json, or the JSON file.", show_default=False),
    ],
    out: Annotated[Path, typer.Option(help="Feature-cache folder to write (resumes if it exists).")] = Path("feats"),
    split: Annotated[str, typer.Option(help="Images to collect: train, test, or all.")] = "train",
    sam: SamOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    points_per_batch: Annotated[int, typer.Option(min=1, help="Grid points decoded together.")] = 256,
    shard_size: Annotated[
        int, typer.Option(min=1, help="Images per committed shard (a crash re-does at most this many).")
    ] = 256,
    float32: Annotated[bool, typer.Option("--float32", help="Store features as float32 (default float16).")] = False,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Run SAM on every image of DATA, match its masks to the ground truth and cache features and relations."""
    from relate_anything.devices import check_device
    from relate_anything.pipeline_spec import PipelineSpec

    dataset = _psg_dataset(data, split)
    spec = PipelineSpec(sam=sam, dtype=dtype, settings=settings, points_per_batch=points_per_batch)
    segmenter = spec.build_segmenter(check_device(device), on_loaded=print_loaded)
    import torch

    from relate_anything.training.collection import collect

    feature_dtype = torch.float32 if float32 else torch.float16
    with progress_callback("collecting") as progress:
        stats = collect(dataset, segmenter, out, shard_size=shard_size, feature_dtype=feature_dtype, progress=progress)
    stderr.print(
        f"{stats.images} images collected ({stats.already_done} already cached, {stats.without_relations} without "
        f"relations skipped); {stats.masks} SAM masks; ground-truth masks matched {stats.matched_fraction:.1%}, "
        f"relations kept {stats.kept_fraction:.1%} -> {out}",
        highlight=False,
    )


@handles_errors
def train_command(
    cache: Annotated[
        Path, typer.Argument(help="Training feature cache (from `relate-anything collect`).", show_default=False)
    ],
    val_cache: Annotated[
        Path | None, typer.Option(help="Held-out feature cache for R@20/50/100 after every epoch.", show_default=False)
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for head.safetensors, head_ema.safetensors, train_state.pt, history.json.")
    ] = Path("runs/ram"),
    epochs: Annotated[int, typer.Option(min=0, help="Passes over the training cache (RAM: 12).")] = 12,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (x0.1 at each milestone).")] = 1e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    milestones: Annotated[str, typer.Option(help="Comma-separated epochs at which lr drops x0.1.")] = "6,10",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step (per GPU).")] = 4,
    loss: Annotated[str, typer.Option(help="multi_label_ce (RAM's) or bce.")] = "multi_label_ce",
    max_grad_norm: Annotated[
        float, typer.Option(help="Clip the gradient norm to this (RAM: 0.01); 0 disables.")
    ] = 0.01,
    ema_decay: Annotated[
        float, typer.Option(help="EMA of the weights (the distillation teacher); 0 disables.")
    ] = 0.999,
    distill_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the EMA teacher's soft labels in the targets; 0 disables (measured: no mR@K gain, "
            "0.5 or temperature 2 worse; 0.25 gave ~+1.7 R@20; see docs/benchmarks.md)."
        ),
    ] = 0.0,
    distill_temperature: Annotated[float, typer.Option(help="Temperature of the teacher's soft labels.")] = 1.0,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from these head weights (.pth or .safetensors).", show_default=False)
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/train_state.pt if it exists.")] = False,
    amp: Annotated[bool, typer.Option(help="bf16 autocast on CUDA.")] = True,
    device: DeviceOption = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the weights' init, shuffling and dropout.")] = 0,
    num_workers: Annotated[int, typer.Option(min=0, help="DataLoader workers.")] = 0,
) -> None:
    """Train the RAM relation head on a feature cache (one GPU, or many with torchrun)."""
    from relate_anything.training.trainer import TrainConfig, train

    try:
        lr_milestones = tuple(int(m) for m in milestones.split(",") if m.strip())
    except ValueError:
        raise UsageError(f"--milestones must be comma-separated epochs, got {milestones!r}") from None
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        lr_milestones=lr_milestones,
        batch_size=batch_size,
        loss=loss,  # type: ignore[arg-type]  # validated by TrainConfig
        max_grad_norm=max_grad_norm or None,
        ema_decay=ema_decay,
        distill_weight=distill_weight,
        distill_temperature=distill_temperature,
        init_from=init_from,
        checkpoint_dir=out,
        resume=resume,
        amp=amp,
        device=device,
        seed=seed,
        num_workers=num_workers,
    )
    train(cache, val_cache, config=config)
    if int(os.environ.get("RANK", "0")) == 0:
        stderr.print(f"trained head: {out / 'head.safetensors'} (EMA: {out / 'head_ema.safetensors'})", highlight=False)


def _psg_dataset(data: Path, split: str):
    if split not in ("train", "test", "all"):
        raise UsageError(f"--split must be train, test or all, got {split!r}")
    from relate_anything.datasets import PsgDataset

    return PsgDataset(data, split=None if split == "all" else split)


@segment_settings_options
@handles_errors
def distill_command(
    images: Annotated[
        str,
        typer.Argument(
            metavar="IMAGES",
            help="Unlabeled photos: a folder, a glob, or a manifest (as for `batch`).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for the caches, head.safetensors and report.json (resumes if it exists).")
    ] = Path("runs/distill"),
    student_sam: Annotated[
        str | None,
        typer.Option(
            help="The student segmenter: SAM, SAM-HQ or SAM 2, hub id, folder or sam_vit_*.pth "
            "(default: $RELATE_ANYTHING_STUDENT_SAM, else facebook/sam-vit-base).",
            show_default=False,
            rich_help_panel="Models",
        ),
    ] = None,
    teacher_sam: SamOption = None,
    teacher_ram: RamOption = None,
    temperature: Annotated[float, typer.Option(help="T of the teacher's soft targets (> 0).")] = 2.0,
    psg: Annotated[
        Path | None,
        typer.Option(
            help="A PSG dataset (folder with psg.json) whose annotated images among IMAGES also get hard labels.",
            show_default=False,
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Weight of the teacher's targets on images with hard labels.")
    ] = 0.5,
    held_out: Annotated[
        float,
        typer.Option(help="Fraction of IMAGES kept out of training for the report."),
    ] = 0.1,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 12,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per training step.")] = 4,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    seed: Annotated[int, typer.Option(help="Seed of the training run.")] = 0,
    settings: SegmentSettings = SegmentSettings(),
) -> None:
    """Teach a relation head for another segmenter with RAM's published pair (SAM ViT-H + RAM)."""
    from relate_anything.batch import list_inputs
    from relate_anything.devices import check_device
    from relate_anything.pipeline_spec import PipelineSpec
    from relate_anything.training.distill_settings import DistillSettings
    from relate_anything.weights import STUDENT_WEIGHTS, resolve_all

    distill_settings = DistillSettings(temperature=temperature, alpha=alpha, held_out=held_out)
    items = list_inputs(images)
    ground_truth = None
    if psg is not None:
        dataset = _psg_dataset(psg, "all")
        ground_truth = {graph.file: graph for graph in dataset if graph.file}
    device = check_device(device)
    spec = PipelineSpec(sam=teacher_sam, ram=teacher_ram, dtype=dtype, settings=settings).resolved()
    student_name = STUDENT_WEIGHTS.reference(student_sam)
    # The teacher's and the student's weights, every missing one named at once, before torch loads.
    resolve_all([*spec.model_references().values(), (student_name, STUDENT_WEIGHTS)])
    from relate_anything.pipeline import RelateAnything
    from relate_anything.sam import Segmenter
    from relate_anything.sam.students import load_student
    from relate_anything.training.distillation import distill
    from relate_anything.training.trainer import TrainConfig

    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, device=device, seed=seed)
    teacher = spec.build(device, on_loaded=print_loaded)
    student = load_student(student_name, device=device)

    def student_pipeline(head):
        # The student's own pipeline (SAM, SAM-HQ or SAM 2 segmenting everything), for its speed.
        segmenter = Segmenter(student.model, settings=settings, name=student_name)
        return RelateAnything(segmenter, head.to(device), settings=settings)

    with progress_bar() as bar:
        tasks = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = distill(
            items,
            teacher,
            student,
            out,
            student_name=student_name,
            teacher_names={"sam": spec.sam, "ram": spec.ram},
            config=config,
            settings=distill_settings,
            ground_truth=ground_truth,
            student_pipeline=student_pipeline,
            progress=progress,
        )
    print_distill_report(report, out)


def print_distill_report(report, out: Path) -> None:
    """The report as a table: agreement with the teacher, speeds, PSG recall."""
    from rich.table import Table

    from relate_anything.console import stdout

    table = Table(title=f"{report.student} taught by {report.teacher.get('sam')} + RAM (held-out images)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in report.agreement.items():
        table.add_row(name, f"{100 * value:.1f} %" if name.startswith("teacher_R@") else f"{value:.4f}")
    for name, value in report.speed.items():
        table.add_row(name, "-" if value is None else f"{value:g}")
    for name, value in (report.psg or {}).items():
        table.add_row(f"PSG {name}", f"{100 * value:.1f} %")
    stdout.print(table)
    stdout.print(f"head: {out / 'head.safetensors'}; report: {out / 'report.json'}", markup=False)
