"""Shared fixtures: the photographs in ../shared/images and tiny random models built on the fly."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGES = REPO.parent / "shared" / "images"

# Tests never reach the hub: a missing model must fail fast with our own message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def images_dir() -> Path:
    if not SHARED_IMAGES.is_dir():
        pytest.skip(f"shared test photographs not found at {SHARED_IMAGES}")
    return SHARED_IMAGES


@pytest.fixture(scope="session")
def dog_jpg(images_dir: Path) -> Path:
    return images_dir / "dog.jpg"
