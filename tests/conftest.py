"""Shared fixtures: the photographs in tests/data and tiny random models built on the fly.

Markers (one hook below handles both):
- `slow`: long runs (learning, kill and resume, full-size parity, the browser); deselected by
  default, run with `python -m pytest -m slow` (CI runs both).
- `gpu`: needs CUDA; skipped, saying so, where there is none.
"""

import os
from pathlib import Path

import pytest

from relate_anything.settings import SegmentSettings

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
IMAGES = DATA / "images"
#: The published RAM head checkpoint's keys and shapes.
RAM_LAYOUT_FILE = DATA / "ram_checkpoint_layout.txt"

# Tests never reach the hub: a missing model must fail fast with our own message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Settings for random weights: they predict IoU ~0.08, so SAM's default thresholds would keep no
# mask, and their masks cover most of the photo, so box NMS would keep one. Duplicate removal
# stays on.
RANDOM_WEIGHT_SETTINGS = SegmentSettings(
    points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
)
#: The same as `relate-anything` flags.
RANDOM_WEIGHT_FLAGS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
                       "--box-nms-thresh", "1"]  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests without CUDA (with the reason); `slow` ones are chosen by `-m`."""
    import torch

    if torch.cuda.is_available():
        return
    no_cuda = pytest.mark.skip(reason="needs CUDA (a GPU machine: python -m pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_cuda)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models on a shared 2-core machine run ~10x slower when
    OpenMP oversubscribes the cores (use with `pytestmark = pytest.mark.usefixtures(...)`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def images_dir() -> Path:
    if not (IMAGES / "dog.jpg").is_file():
        raise FileNotFoundError(f"the test photographs are missing from {IMAGES}: the repository is incomplete")
    return IMAGES


@pytest.fixture(scope="session")
def dog_jpg(images_dir: Path) -> Path:
    return images_dir / "dog.jpg"


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory):
    """A tiny random SAM saved as a transformers folder and as original-format checkpoint files."""
    from sam_factory import TINY_ENCODER, write_sam_files

    return write_sam_files(TINY_ENCODER, tmp_path_factory.mktemp("tiny_sam"))


@pytest.fixture(scope="session")
def small_sam(tmp_path_factory) -> Path:
    """`tiny_sam`'s encoder for 256-pixel inputs (a 16 x 16 embedding grid), saved with
    save_pretrained: a few times faster a photo, for tests that run many photos."""
    from sam_factory import TINY_ENCODER, random_sam

    folder = tmp_path_factory.mktemp("small_sam")
    random_sam(TINY_ENCODER, image_size=256).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_ram_pth(tmp_path_factory) -> Path:
    """A small random RAM head for 256-d SAM features and PSG's 56 predicates, in the published
    ram_epoch12.pth layout (a plain state dict, loaded without a config)."""
    from ram_factory import random_state_dict, write_published_pth
    from relate_anything.ram import RelationHeadConfig

    config = RelationHeadConfig(
        hidden_size=128, num_heads=2, intermediate_size=64, vocab_size=10, max_position_embeddings=4
    )
    return write_published_pth(tmp_path_factory.mktemp("tiny_ram") / "ram_epoch12.pth", random_state_dict(config))


@pytest.fixture(scope="session")
def tiny_clip_folder(tmp_path_factory) -> Path:
    """A tiny random CLIP with its tokenizer, saved with save_pretrained."""
    import naming_factory

    return naming_factory.save(*naming_factory.tiny_clip(), tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_owlv2_folder(tmp_path_factory) -> Path:
    """A tiny random OWLv2 with its tokenizer, saved with save_pretrained."""
    import naming_factory

    return naming_factory.save(*naming_factory.tiny_owlv2(), tmp_path_factory.mktemp("tiny_owlv2"))


@pytest.fixture(scope="session")
def tiny_seggpt_folder(tmp_path_factory) -> Path:
    """A tiny random SegGPT, saved with save_pretrained."""
    from seggpt_factory import random_seggpt

    folder = tmp_path_factory.mktemp("tiny_seggpt")
    random_seggpt().save_pretrained(folder)
    return folder
