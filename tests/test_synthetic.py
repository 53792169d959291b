"""The synthetic PSG generator: deterministic, read by the real reader, relations true to the masks.

The relation checks below are written independently of the generator's rule functions: they test
what each predicate promises on the masks read back from the panoptic PNGs.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from relate_anything.datasets import PsgDataset, check_psg, make_synthetic_psg
from relate_anything.datasets.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    make_synthetic_psg(out, images=40, seed=3)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    make_synthetic_psg(tmp_path / "a", images=5, seed=7)
    make_synthetic_psg(tmp_path / "b", images=5, seed=7)
    make_synthetic_psg(tmp_path / "c", images=5, seed=8)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert len(a) == 11 and a == b  # psg.json + 5 photos + 5 PNGs
    assert a.keys() == c.keys() and a != c


def test_read_back_by_the_real_reader(synthetic):
    assert check_psg(synthetic) == []
    dataset = PsgDataset(synthetic)
    assert len(dataset) == 40  # every image has a relation
    test, train = PsgDataset(synthetic, split="test"), PsgDataset(synthetic, split="train")
    assert len(test) == 4 and len(train) == 36 and not set(test.image_ids) & set(train.image_ids)
    graph = dataset[0]
    assert (graph.width, graph.height) == (320, 240) and graph.file == f"images/{graph.image_id}.jpg"
    assert dataset.image_path(0).is_file()
    masks = graph.masks()
    assert masks.sum(axis=0).max() == 1  # panoptic: no overlap


def _rows_cols(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def _touch(a, b):
    return (ndimage.binary_dilation(a) & b).any()  # 4-neighbourhood (the default cross)


def _on(a, b):
    bottom = _rows_cols(a)[1]
    return b[bottom + 1, a[bottom]].mean() > 0.5


def _over(a, b):
    ay0, ay1, ax0, ax1 = _rows_cols(a)
    by0, by1, bx0, bx1 = _rows_cols(b)
    return ay1 < by0 - 1 and ax0 <= bx1 and bx0 <= ax1


def _beside(a, b):
    ay0, ay1, ax0, ax1 = _rows_cols(a)
    by0, by1, bx0, bx1 = _rows_cols(b)
    return ax1 < bx0 and min(ay1, by1) >= max(ay0, by0)


def _in(a, b):
    return not (a & ~ndimage.binary_fill_holes(b)).any()


CHECKS = {
    "in": _in,
    "enclosing": lambda a, b: _in(b, a),
    "standing on": _on,
    "parked on": _on,
    "on": _on,
    "in front of": _touch,
    "over": _over,
    "flying over": _over,
    "beside": _beside,
}


def test_relations_follow_from_the_masks(synthetic):
    predicates = Counter()
    for graph in PsgDataset(synthetic):
        masks, labels = graph.masks(), [s.label for s in graph.segments]
        triplets = {(r.subject, r.predicate, r.object) for r in graph.relations}
        for s, predicate, o in triplets:
            assert CHECKS[predicate](masks[s], masks[o]), (graph.image_id, labels[s], predicate, labels[o])
            if predicate == "in":
                assert (o, "enclosing", s) in triplets
            if predicate == "standing on":
                assert labels[s] in {"person", "dog", "horse", "cow", "sheep", "cat", "bird"}
            if predicate == "parked on":
                assert labels[s] in {"car", "truck", "motorcycle", "bus"}
            if predicate == "flying over":
                assert labels[s] in {"kite", "bird", "airplane", "frisbee"}
        predicates.update(p for _, p, _ in triplets)
    assert {"in", "enclosing", "standing on", "on", "beside", "in front of", "flying over"} <= set(predicates), (
        predicates
    )


def test_photo_backgrounds(tmp_path, images_dir):
    make_synthetic_psg(tmp_path / "plain", images=3, seed=1, size=(160, 120))
    make_synthetic_psg(tmp_path / "photos", images=3, seed=1, size=(160, 120), photos_dir=images_dir)
    plain, photos = _files(tmp_path / "plain"), _files(tmp_path / "photos")
    assert plain.keys() == photos.keys()
    for name in plain:  # the photos change the pictures, not the scenes
        assert (plain[name] == photos[name]) == (not name.startswith("images/")), name
    assert check_psg(tmp_path / "photos") == []
    assert PsgDataset(tmp_path / "photos")[0].width == 160


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        make_synthetic_psg(tmp_path, size=(32, 32))
    with pytest.raises(FileNotFoundError, match="no .jpg"):
        make_synthetic_psg(tmp_path, photos_dir=tmp_path)


def test_cli_synth_then_check(tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(app, ["synth", "--out", str(out), "--images", "6", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'psg.json'}: 6 images (1 test)" in result.output
    result = runner.invoke(app, ["check", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("6 images, ") and result.output.strip().endswith(", 0 problems")


def test_cli_synth_bad_photos(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--photos", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "--photos" in result.output and "Traceback" not in result.output
