"""Memory held by a SAM 2 video session over a clip: transformers' session as is, against
`Sam2VideoTracker` (pruned; and pruned + chunked).

The model has random weights and the published SAM 2.1 sizes of everything a session stores per
frame (1024-pixel input, 256-wide mask decoder and FPN, 64-channel mask memories, 7 memories, 16
object pointers) but a tiny Hiera backbone, so that it runs on a CPU; what a session stores does
not depend on the backbone's depth or width. Objects are forced present (object-score bias), as a
tracked object usually is.

    python bench/sam2_session_memory.py --frames 24 --objects 2
    python bench/sam2_session_memory.py --frames 2 --objects 1 --chunk-size 1    # a smoke run

The record (bench/records.py; `--json`, default bench/results/sam2_session_memory-<date>-cpu.json)
has one figures row per session kind: session, frames, objects, mib_after_first_frame,
mib_last_frame, growth_mib_per_frame (over the last growth_window_frames frames, at most 8);
details holds the MiB after every frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from relate_anything.sam.sam2_ops import preprocess_square, square_mask_inputs
from relate_anything.video.sam2 import Sam2TrackerSettings, Sam2VideoTracker, inference_session_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

HEIGHT, WIDTH = 480, 640


def published_sized_model(seed: int = 0) -> Sam2VideoModel:
    """Random SAM 2 whose stored per-frame tensors have the published sizes (see the docstring)."""
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 16,
        "num_attention_heads": 1,
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [16, 32, 64, 128],
        "num_attention_heads_per_stage": [1, 1, 2, 2],
        "global_attention_blocks": [3],
    }
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": [128, 64, 32, 16],
    }
    config = Sam2VideoConfig(vision_config=vision, memory_attention_num_layers=1)
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    with torch.no_grad():  # every tracked object present
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(8.0)
    return model


def raw_session_bytes(model, frames, prompts) -> list[int]:
    """transformers' streaming session, nothing dropped: tensor bytes after each frame."""
    session = Sam2VideoInferenceSession(video_height=HEIGHT, video_width=WIDTH, dtype=torch.float32)
    sizes = []
    for index, frame in enumerate(frames):
        new = prompts.get(index, {})
        for obj_id, mask in new.items():
            session.add_mask_inputs(session.obj_id_to_idx(obj_id), index, square_mask_inputs(mask[None], 1024))
        session.obj_with_new_inputs = list(new)
        model(inference_session=session, frame=preprocess_square(frame, image_size=1024)[0], frame_idx=index)
        sizes.append(inference_session_stats(session).tensor_bytes)
    return sizes


def tracker_bytes(model, frames, prompts, chunk_size: int) -> list[int]:
    tracker = Sam2VideoTracker(model, settings=Sam2TrackerSettings(chunk_size=chunk_size))
    tracker.start(HEIGHT, WIDTH)
    sizes = []
    for index, frame in enumerate(frames):
        tracker.step(frame, new_objects=prompts.get(index))
        sizes.append(tracker.session_stats().tensor_bytes)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=8)
    records.add_json_option(parser)
    args = parser.parse_args()
    if args.frames < 2:
        parser.error("--frames must be at least 2 (growth is measured between frames)")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(args.frames)]
    masks = []
    for k in range(args.objects):
        mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
        mask[40 * k : 40 * k + 120, 50 * k : 50 * k + 200] = True
        masks.append(mask)
    prompts = {0: dict(enumerate(masks, start=1))}
    model = published_sized_model()
    started = time.perf_counter()
    runs = {
        "transformers session, nothing dropped": raw_session_bytes(model, frames, prompts),
        "Sam2VideoTracker, pruning only": tracker_bytes(model, frames, prompts, chunk_size=10**6),
        f"Sam2VideoTracker, chunk_size {args.chunk_size}": tracker_bytes(model, frames, prompts, args.chunk_size),
    }
    mib = 2**20
    window = min(8, args.frames - 1)
    rows = [
        {
            "session": name,
            "frames": args.frames,
            "objects": args.objects,
            "mib_after_first_frame": round(sizes[0] / mib, 2),
            "mib_last_frame": round(sizes[-1] / mib, 2),
            "growth_mib_per_frame": round((sizes[-1] - sizes[-1 - window]) / window / mib, 3),
            "growth_window_frames": window,
        }
        for name, sizes in runs.items()
    ]
    for row in rows:
        print(json.dumps(row))
    details = {
        "seconds": round(time.perf_counter() - started, 1),
        "mib_after_each_frame": {name: [round(b / mib, 2) for b in sizes] for name, sizes in runs.items()},
    }
    records.save("sam2_session_memory", rows, device="cpu", path=args.json, details=details)


if __name__ == "__main__":
    main()
