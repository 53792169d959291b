"""`DistillSettings`: how `relate-anything distill` teaches a student head (a plain frozen
dataclass, apart from `distillation` so that the command checks its flags before torch loads)."""

from __future__ import annotations

from dataclasses import dataclass

from relate_anything.errors import UsageError

__all__ = ["DistillSettings"]


@dataclass(frozen=True)
class DistillSettings:
    """How the student head is taught.

    Attributes:
        temperature: T of the teacher's soft targets (and of the T^2-scaled loss).
        alpha: weight of the teacher's soft targets on images that also have hard (PSG) labels;
            images without labels learn from the teacher alone.
        held_out: fraction of the images kept out of training for the report (chosen by a hash
            of each image's name, so a resumed run keeps the same split).
        speed_images: held-out images timed through both pipelines for the report.
    """

    temperature: float = 2.0
    alpha: float = 0.5
    held_out: float = 0.1
    speed_images: int = 4

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise UsageError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"alpha must be between 0 and 1, got {self.alpha}")
        if not 0.0 < self.held_out < 1.0:
            raise UsageError(f"held_out must be a fraction between 0 and 1, got {self.held_out}")
        if self.speed_images < 0:
            raise UsageError(f"speed_images must be >= 0, got {self.speed_images}")
