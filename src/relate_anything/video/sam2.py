"""SAM 2's video predictor as a streaming tracker: frames in one at a time, masks with stable ids out.

`Sam2VideoTracker` wraps transformers' `Sam2VideoModel` and `Sam2VideoInferenceSession` in
streaming mode (``model(inference_session=..., frame=..., frame_idx=...)``): the clip is never
held, each frame is encoded when it arrives. Objects enter as MASK prompts (SAM's masks) on the
frame where they are given, under ids chosen by the caller; SAM 2 propagates them with its memory.

    >>> tracker = Sam2VideoTracker.from_pretrained(device="cuda")     # facebook/sam2.1-hiera-tiny
    >>> tracker.start(height, width)
    >>> for index, frame in enumerate(frames):                          # [H, W, 3] uint8 each
    ...     new = {7: sam_mask} if index == 0 else None                 # [H, W] bool
    ...     tracked = tracker.step(frame, new_objects=new)             # TrackedMasks
    ...     tracked.ids, tracked.masks.shape                            # (7,), [1, H, W]

Memory is bounded for any clip length, in two ways:

- Pruning (exact). After each frame the session keeps only what SAM 2 can still read: the
  spatial memory (mask-memory features) of the last ``num_maskmem - 1`` tracked frames, the
  object pointers of the last ``max_object_pointers_in_encoder - 1`` tracked frames, and each
  object's prompted ("conditioning") frames, which SAM 2 always attends to. Encoded frames,
  consumed prompts and full-resolution mask logits (4 MiB an object a frame at S = 1024, kept by
  transformers for every frame) are dropped. Results are identical to the unpruned session.
- Chunking. Every ``chunk_size`` frames a fresh session starts, seeded on the last frame with each
  object reported there, under the same id, its last mask as a mask prompt (the image features of
  that frame are reused, not encoded again). This bounds the prompted frames and the objects a
  session carries: objects SAM 2 lost (absent on the boundary frame) are not carried, so their
  per-frame decoding cost ends. Such an object's id ends with the chunk; give it again (under the
  same id or a new one) to track it further.

Bound: a session holds state of at most ``chunk_size + 1`` frames (frames ``0..chunk_size``,
the seed frame included), of which at most ``max(num_maskmem, max_object_pointers_in_encoder) - 1``
tracked ones plus the prompted ones; see `SessionStats`.

Objects SAM 2 says are absent (object-score probability <= ``presence_threshold``) are left out
of a frame's result instead of returned as empty or full-frame masks (sam2 issue #242).

Findings about transformers' port (5.x) that shape this module:

- Streaming works: frames can be added one at a time (``frame=``), with an explicit
  ``frame_idx``; objects may be added on any streamed frame while others are tracked.
- Mask prompts cannot be mixed with point/box prompts on the same frame for one object.
- On a frame where any object is prompted, the memory of every object on that frame is built from
  the binarised mask instead of its sigmoid (``_batch_encode_memories`` passes
  ``any(is_mask_from_pts)`` for the whole batch); tracked objects are not affected otherwise.
- The session's dtype must be a real ``torch.dtype`` (its default is the string ``"float32"``);
  mask memories are stored in bfloat16 whatever the dtype, as the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from relate_anything import weights
from relate_anything.sam.sam2_ops import capture_pointer_tokens, preprocess_square, square_mask_inputs, upscale_logits
from relate_anything.state_dicts import load_pretrained_folder

__all__ = ["Sam2TrackerSettings", "Sam2VideoTracker", "SessionStats", "TrackedMasks", "inference_session_stats"]

# Objects whose masks are upsampled to the frame at once (bounds the transient float buffer).
_UPSCALE_CHUNK = 16
# Outputs SAM 2 only needs while it processes their own frame.
_TRANSIENT_OUTPUTS = ("pred_masks", "high_res_masks")
# Per-frame outputs its memory reads later: mask memories (recent frames), pointers (more frames).
_MEMORY_OUTPUTS = ("maskmem_features", "maskmem_pos_enc")


@dataclass(frozen=True)
class Sam2TrackerSettings:
    """How `Sam2VideoTracker` runs SAM 2 over a clip.

    Attributes:
        chunk_size: frames processed by one SAM 2 session before a fresh one is seeded with the
            objects present on the last frame (bounds prompted frames and lost objects; >= 1).
        presence_threshold: an object is reported on a frame when SAM 2's object-score probability
            (sigmoid of its logit) is above this. SAM 2 blanks the masks of objects whose
            probability is <= 0.5 anyway, so values below 0.5 report nothing more.
        mask_threshold: logit above which a pixel is in a mask (SAM 2's own: 0).
    """

    chunk_size: int = 64
    presence_threshold: float = 0.5
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 0.0 <= self.presence_threshold < 1.0:
            raise ValueError(f"presence_threshold must be in [0, 1), got {self.presence_threshold}")


@dataclass(frozen=True)
class TrackedMasks:
    """The objects SAM 2 reports on one frame.

    Attributes:
        frame_index: 0-based index of the frame in the clip (frames given to `step` since `start`).
        ids: the caller's object ids, one per mask, in the order objects entered the session.
        masks: [K, H, W] bool at the frame's size, on the model's device; none is empty.
        scores: [K] float32, SAM 2's object-presence probability (sigmoid of its object-score logit).
        features: [K, D] float32, the mask decoder's output token SAM 2 made each object's pointer
            from on this frame (see `relate_anything.sam.sam2_ops`); D = the decoder width.
    """

    frame_index: int
    ids: tuple[int, ...]
    masks: torch.Tensor
    scores: torch.Tensor
    features: torch.Tensor

    def __post_init__(self) -> None:
        k = len(self.ids)
        if self.masks.ndim != 3 or self.masks.dtype != torch.bool or self.masks.shape[0] != k:
            raise ValueError(f"masks must be [{k}, H, W] bool, got {tuple(self.masks.shape)} {self.masks.dtype}")
        if tuple(self.scores.shape) != (k,):
            raise ValueError(f"scores must be [{k}], got {tuple(self.scores.shape)}")
        if self.features.ndim != 2 or self.features.shape[0] != k:
            raise ValueError(f"features must be [{k}, D], got {tuple(self.features.shape)}")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class SessionStats:
    """What the current SAM 2 session holds (diagnostics, and the memory bound's tests).

    Attributes:
        frames: distinct frame indices with any per-frame state (encoded frames, cached image
            features, prompts, outputs, tracking marks).
        prompted_frames: of those, frames holding some object's conditioning output.
        objects: objects in the session.
        tensor_bytes: bytes of the tensors in its per-frame state (outputs, prompts, frames,
            cached features).
    """

    frames: int
    prompted_frames: int
    objects: int
    tensor_bytes: int


@dataclass
class _Clip:
    """Mutable per-clip state of a tracker (private)."""

    height: int
    width: int
    frame_index: int = 0  # next frame of the clip
    session: Sam2VideoInferenceSession | None = None
    local_index: int = 0  # next frame of the session
    session_frames: int = 0  # frames stepped in the session, its seed frame excluded
    last_pixels: torch.Tensor | None = None  # [1, 3, S, S] of the previous frame
    last_logits: dict[int, torch.Tensor] | None = None  # id -> [h, w] low-res logits on the previous frame


class Sam2VideoTracker:
    """SAM 2 video tracking of mask-prompted objects over streamed frames (see the module docstring).

    Args:
        model: a transformers `Sam2VideoModel` (see `from_pretrained`), in eval mode.
        settings: chunking and thresholds.

    Example:
        >>> tracker = Sam2VideoTracker.from_pretrained("facebook/sam2.1-hiera-small", device="cuda")
        >>> tracker.start(720, 1280)
        >>> tracked = tracker.step(frame, new_objects={1: mask})   # frame [720, 1280, 3] uint8
    """

    def __init__(self, model: Sam2VideoModel, *, settings: Sam2TrackerSettings = Sam2TrackerSettings()) -> None:
        self.model = model.eval()
        self.settings = settings
        size = model.config.image_size
        self.image_size: int = size if isinstance(size, int) else int(size[0])
        self._clip: _Clip | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        settings: Sam2TrackerSettings = Sam2TrackerSettings(),
    ) -> Sam2VideoTracker:
        """Load SAM 2 (video) from a local folder or a hub id.

        Args:
            name_or_path: a ``save_pretrained`` folder of a `Sam2VideoModel` (config.json with
                ``model_type`` ``sam2_video`` + safetensors) or a hub id; default
                $RELATE_ANYTHING_SAM2, else ``facebook/sam2.1-hiera-tiny``. Resolved by
                `relate_anything.weights.resolve` (the Hugging Face cache first, then a download
                of config and safetensors only; nothing is unpickled).
            device: where the model and its session state live.
            dtype: parameter and session dtype (bfloat16/float16 halve memory on GPUs).

        Raises:
            WeightsNotFoundError: neither on disk nor in the cache, and not downloadable.
            CheckpointError: the folder is not a SAM 2 video model, or its weights do not fit.
        """
        reference = weights.SAM2_WEIGHTS.reference(name_or_path)
        path = weights.resolve(reference, weights.SAM2_WEIGHTS)
        model = load_pretrained_folder(path, {"sam2_video": Sam2VideoModel}, name="SAM 2 video")
        return cls(model.to(device=device, dtype=dtype).eval(), settings=settings)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def feature_dim(self) -> int:
        """Width D of `TrackedMasks.features` (the mask decoder's width, 256 for published SAM 2)."""
        return self.model.config.mask_decoder_config.hidden_size

    # ------------------------------------------------------------------------------------------
    # Streaming

    def start(self, height: int, width: int) -> None:
        """Begin a clip of (height, width) frames; forgets any previous clip and its objects."""
        if height < 1 or width < 1:
            raise ValueError(f"frame size must be positive, got {height} x {width}")
        self._clip = _Clip(height=int(height), width=int(width))

    @property
    def frame_index(self) -> int:
        """Index the next frame given to `step` will have (frames stepped since `start`)."""
        return self._require_clip().frame_index

    @property
    def object_ids(self) -> tuple[int, ...]:
        """Ids of the objects the current session tracks (present or not on the last frame)."""
        session = self._require_clip().session
        return () if session is None else tuple(session.obj_ids)

    def step(
        self,
        frame: np.ndarray | torch.Tensor,
        *,
        new_objects: Mapping[int, np.ndarray | torch.Tensor] | None = None,
    ) -> TrackedMasks:
        """Track the objects onto the next frame, adding any new ones on it.

        Args:
            frame: [H, W, 3] uint8 RGB, the clip's next frame (numpy, or a torch tensor on any device).
            new_objects: id -> [H, W] bool mask prompt on this frame. An id the session does not
                track adds an object; an id it tracks re-anchors that object on this mask.

        Returns:
            `TrackedMasks` of the objects present on this frame, prompted ones included (their
            mask is SAM 2's echo of the prompt, not the prompt itself).

        Raises:
            ValueError: a frame or mask of the wrong size or type, an empty mask.
            RuntimeError: `start` was not called.
        """
        clip = self._require_clip()
        if tuple(frame.shape[:2]) != (clip.height, clip.width):
            raise ValueError(f"frame is {tuple(frame.shape)}, the clip's frames are [{clip.height}, {clip.width}, 3]")
        prompts = self._prompt_masks(clip, new_objects or {})
        if clip.session is not None and clip.session_frames >= self.settings.chunk_size:
            self._reseed(clip)
        if clip.session is None and not prompts:
            result = self._empty(clip.frame_index, clip)
            clip.frame_index += 1
            return result
        pixels = preprocess_square(frame, image_size=self.image_size, device=self.device, dtype=self.dtype)
        if clip.session is None:
            clip.session = self._new_session(clip)
            clip.local_index, clip.session_frames = 0, 0
        session = clip.session
        for obj_id, mask in prompts.items():
            session.add_mask_inputs(session.obj_id_to_idx(obj_id), clip.local_index, mask)
        session.obj_with_new_inputs = list(prompts)
        with capture_pointer_tokens(self.model) as tokens:
            output = self.model(inference_session=session, frame=pixels[0], frame_idx=clip.local_index)
        _prune(session, clip.local_index, self.model)
        result = self._result(clip, output.object_ids, output.pred_masks, output.object_score_logits, tokens)
        clip.last_pixels = pixels
        clip.local_index += 1
        clip.session_frames += 1
        clip.frame_index += 1
        return result

    def session_stats(self) -> SessionStats:
        """What the current session holds (all zero before the first object)."""
        session = self._require_clip().session
        return SessionStats(0, 0, 0, 0) if session is None else inference_session_stats(session)

    # ------------------------------------------------------------------------------------------
    # Internals

    def _require_clip(self) -> _Clip:
        if self._clip is None:
            raise RuntimeError("call start(height, width) before step()")
        return self._clip

    def _prompt_masks(
        self, clip: _Clip, new_objects: Mapping[int, np.ndarray | torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """Validated prompts as id -> [1, 1, S, S] 0/1 masks on the device."""
        prompts: dict[int, torch.Tensor] = {}
        for obj_id, mask in new_objects.items():
            if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
                raise ValueError(f"object ids must be integers, got {obj_id!r}")
            tensor = torch.as_tensor(mask, device=self.device) if isinstance(mask, np.ndarray) else mask
            if tuple(tensor.shape) != (clip.height, clip.width) or tensor.dtype != torch.bool:
                raise ValueError(
                    f"mask of object {obj_id} must be [{clip.height}, {clip.width}] bool, "
                    f"got {tuple(tensor.shape)} {tensor.dtype}"
                )
            square = square_mask_inputs(tensor.to(self.device)[None], self.image_size)
            if not bool(square.any()):
                raise ValueError(f"mask of object {obj_id} is empty (at SAM 2's {self.image_size}² input)")
            prompts[int(obj_id)] = square
        return prompts

    def _new_session(self, clip: _Clip) -> Sam2VideoInferenceSession:
        # dtype must be a torch.dtype: the session's default is the string "float32".
        return Sam2VideoInferenceSession(
            video_height=clip.height,
            video_width=clip.width,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=self.dtype,
        )

    def _reseed(self, clip: _Clip) -> None:
        """Replace the session by a fresh one holding the objects present on the last frame.

        The last frame becomes the new session's frame 0, with each object's last mask (its
        low-resolution logits upsampled to S² and thresholded, as SAM 2 upsamples them for its
        memory) as a mask prompt; its image features move over from the old session's cache.
        """
        old, carried = clip.session, clip.last_logits or {}
        clip.session = None
        if not carried:
            return
        session = self._new_session(clip)
        session.add_new_frame(clip.last_pixels[0], 0)
        features = old.cache.get_vision_features(clip.local_index - 1)
        if features is not None:
            session.cache.cache_vision_features(0, features)
        size = (self.image_size, self.image_size)
        for obj_id, logits in carried.items():
            high_res = F.interpolate(logits[None, None].float(), size, mode="bilinear", align_corners=False)
            mask = (high_res > self.settings.mask_threshold).float()
            session.add_mask_inputs(session.obj_id_to_idx(obj_id), 0, mask)
        session.obj_with_new_inputs = list(carried)
        self.model(inference_session=session, frame_idx=0)
        _prune(session, 0, self.model)
        clip.session, clip.local_index, clip.session_frames = session, 1, 0

    def _result(
        self,
        clip: _Clip,
        object_ids: list[int],
        pred_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        tokens: list[torch.Tensor],
    ) -> TrackedMasks:
        """Present objects of one forward's output; remembers their logits for re-seeding."""
        if len(tokens) != len(object_ids):  # one decoder call per object, in object order
            raise RuntimeError(f"captured {len(tokens)} mask-decoder calls for {len(object_ids)} objects")
        low_res = pred_masks[:, 0]  # [N, h, w]
        scores = torch.sigmoid(object_score_logits.float().reshape(-1))
        present = (scores > self.settings.presence_threshold).nonzero()[:, 0]
        masks = self._upscale_masks(clip, low_res[present])
        nonempty = masks.flatten(1).any(dim=1)
        keep = present[nonempty]
        ids = tuple(int(object_ids[i]) for i in keep.tolist())
        clip.last_logits = {obj_id: low_res[i] for obj_id, i in zip(ids, keep.tolist())}
        features = torch.cat(tokens).float() if tokens else low_res.new_zeros(0, self.feature_dim)
        return TrackedMasks(
            frame_index=clip.frame_index,
            ids=ids,
            masks=masks[nonempty],
            scores=scores[keep],
            features=features[keep],
        )

    def _upscale_masks(self, clip: _Clip, low_res: torch.Tensor) -> torch.Tensor:
        size = (clip.height, clip.width)
        chunks = [upscale_logits(c, size) > self.settings.mask_threshold for c in low_res.split(_UPSCALE_CHUNK)]
        return torch.cat(chunks) if chunks else torch.zeros(0, *size, dtype=torch.bool, device=self.device)

    def _empty(self, frame_index: int, clip: _Clip) -> TrackedMasks:
        clip.last_logits = {}
        return TrackedMasks(
            frame_index=frame_index,
            ids=(),
            masks=torch.zeros(0, clip.height, clip.width, dtype=torch.bool, device=self.device),
            scores=torch.zeros(0, device=self.device),
            features=torch.zeros(0, self.feature_dim, device=self.device),
        )


def _prune(session: Sam2VideoInferenceSession, frame_idx: int, model: Sam2VideoModel) -> None:
    """Drop the session state that no later frame can read, after `frame_idx` was processed.

    What SAM 2 reads for frame t (``_gather_memory_frame_outputs``, ``_get_object_pointers``):
    every conditioning output of the object, the mask memories of tracked frames
    t - (num_maskmem - 1) .. t - 1 and the object pointers of tracked frames
    t - (max_object_pointers_in_encoder - 1) .. t - 1; the encoded frame and prompts of t only
    while t is processed. Frames only move forward here, so older state is never read again.
    """
    next_frame = frame_idx + 1
    oldest_memory = next_frame - (model.num_maskmem - 1)
    oldest_pointer = next_frame - (model.config.max_object_pointers_in_encoder - 1)
    if session.processed_frames is not None:
        session.processed_frames.clear()  # the frame's features stay in the session's cache
    for obj_idx, outputs in session.output_dict_per_obj.items():
        for stored in (*outputs["cond_frame_outputs"].values(), *outputs["non_cond_frame_outputs"].values()):
            for key in _TRANSIENT_OUTPUTS:
                stored.pop(key, None)
        tracked = outputs["non_cond_frame_outputs"]
        for index in [index for index in tracked if index < oldest_memory]:
            if index < oldest_pointer:
                del tracked[index]
            else:
                for key in _MEMORY_OUTPUTS:
                    tracked[index].pop(key, None)
        for per_frame in (
            session.frames_tracked_per_obj[obj_idx],
            session.mask_inputs_per_obj[obj_idx],
            session.point_inputs_per_obj[obj_idx],
        ):
            for index in [index for index in per_frame if index <= frame_idx]:
                del per_frame[index]


def inference_session_stats(session: Sam2VideoInferenceSession) -> SessionStats:
    """`SessionStats` of any transformers SAM 2 video session (pruned by a tracker or not)."""
    frames: set[int] = set(session.processed_frames or {})
    frames.update(session.cache._vision_features)  # the cache has no public listing
    prompted: set[int] = set()
    tensors: list[torch.Tensor] = [*(session.processed_frames or {}).values()]
    for cached in session.cache._vision_features.values():
        tensors.extend(_tensors(cached))
    for obj_idx, outputs in session.output_dict_per_obj.items():
        prompted.update(outputs["cond_frame_outputs"])
        for per_frame in outputs.values():
            frames.update(per_frame)
            for stored in per_frame.values():
                tensors.extend(_tensors(stored))
        for per_frame in (
            session.frames_tracked_per_obj[obj_idx],
            session.mask_inputs_per_obj[obj_idx],
            session.point_inputs_per_obj[obj_idx],
        ):
            frames.update(per_frame)
            for stored in per_frame.values():
                tensors.extend(_tensors(stored))
    unique = {id(t): t for t in tensors}.values()
    return SessionStats(
        frames=len(frames),
        prompted_frames=len(prompted),
        objects=session.get_obj_num(),
        tensor_bytes=sum(t.numel() * t.element_size() for t in unique),
    )


def _tensors(value: object) -> list[torch.Tensor]:
    """Every tensor inside nested dicts / lists / tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []
