"""The CUDA path computes what the CPU path computes (skipped without a GPU)."""

import numpy as np
import pytest
import torch
from conftest import RANDOM_WEIGHT_OPTIONS

from relate_anything import RelateAnything

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_pipeline_on_cuda_matches_cpu(tiny_sam, tiny_ram_pth, dog_jpg):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    graphs = {
        device: RelateAnything.from_pretrained(tiny_sam.original_pth, tiny_ram_pth, device=device, **RANDOM_WEIGHT_OPTIONS)(dog_jpg)
        for device in ("cpu", "cuda")
    }
    cpu, cuda = graphs["cpu"], graphs["cuda"]
    assert len(cpu.segments) == len(cuda.segments)
    # Masks are thresholded logits: a pixel whose logit is within rounding of 0 may flip.
    disagreement = (cpu.masks() != cuda.masks()).mean()
    assert disagreement < 1e-3
    np.testing.assert_allclose(cpu.features(), cuda.features(), atol=1e-3)
    np.testing.assert_allclose([s.score for s in cpu.segments], [s.score for s in cuda.segments], atol=1e-4)
    assert [(r.subject, r.predicate_id, r.object) for r in cpu.relations[:5]] == [
        (r.subject, r.predicate_id, r.object) for r in cuda.relations[:5]
    ]
