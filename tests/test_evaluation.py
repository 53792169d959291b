"""Evaluation: SGDet / PredCls recall, the one-mask-per-object variant and PQ, on hand-computed cases."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from relate_anything import psg
from relate_anything.evaluation import (
    EvaluationError,
    evaluate,
    pair_predictions,
    panoptic_quality,
    predcls_graph,
    triplet_recall,
)
from relate_anything.evaluation.cli import evaluate_command
from relate_anything.evaluation.masks import hidden_parts, visible_intersections
from relate_anything.masks import coco_rles, mask_ious, paired_mask_ious, rle_intersections, rle_ious
from relate_anything.scene_graph import Relation, SceneGraph, encode_masks

PREDICATES = psg.predicates()
H, W = 20, 20


def box(r0, r1, c0, c1, *, shape=(H, W)):
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def first_pixels(mask, n):
    """The first n pixels of `mask` in row-major order."""
    out = np.zeros_like(mask)
    out.flat[np.flatnonzero(mask)[:n]] = True
    return out


def graph(masks, labels, relations=(), *, scores=None, file="img.jpg", image_id=None):
    """A scene graph; relations are (subject index, predicate name, object index) rows, in rank order."""
    masks = np.array(masks, dtype=bool).reshape(-1, *np.shape(masks[0]) if len(masks) else (H, W))
    scores = np.ones(len(masks)) if scores is None else np.asarray(scores, dtype=float)
    base = SceneGraph.from_masks(masks, scores, labels=list(labels), file=file)
    rows = [
        Relation(subject=s, predicate=p, predicate_id=PREDICATES.index(p), object=o, score=1.0) for s, p, o in relations
    ]
    return replace(base.with_relations(rows), image_id=image_id)


# GT scene: a person (top-left), a horse (top-right), grass (bottom half); no void.
PERSON, HORSE, GRASS = box(0, 10, 0, 10), box(0, 10, 10, 20), box(10, 20, 0, 20)
GT_MASKS = [PERSON, HORSE, GRASS]
GT_LABELS = ["person", "horse", "grass-merged"]


def gt_graph(relations=((0, "riding", 1), (1, "standing on", 2)), **kwargs):
    return graph(GT_MASKS, GT_LABELS, relations, **kwargs)


def sgdet(predictions, gts, **kwargs):
    return evaluate(predictions, gts, **kwargs)["sgdet"]


# -- recall --------------------------------------------------------------------------------------


def test_perfect_prediction_scores_one_everywhere():
    gt = gt_graph()
    report = evaluate([gt], [gt])
    for mode in ("sgdet", "sgdet_one_mask_per_object"):
        assert all(report[mode][f"R@{k}"] == 1.0 for k in (20, 50, 100))
        # two predicates present, each with recall 1; the other 54 count 0
        assert all(report[mode][f"mR@{k}"] == pytest.approx(2 / 56) for k in (20, 50, 100))
    assert report["per_predicate"]["riding"] == {"R@20": 1.0, "R@50": 1.0, "R@100": 1.0, "images": 1}
    assert report["per_predicate"]["on"] == {"R@20": 0.0, "R@50": 0.0, "R@100": 0.0, "images": 0}
    assert report["pq"]["PQ"] == report["pq"]["SQ"] == report["pq"]["RQ"] == 1.0
    assert report["images"] == 1 and report["warnings"] == []
    assert report["protocol"]["skip_empty_predictions"] is False


@pytest.mark.parametrize("overlap, hit", [(49, False), (50, True), (51, True)])
def test_subject_iou_threshold(overlap, hit):
    # the predicted person covers `overlap` of the 100 person pixels and nothing else: IoU = overlap / 100
    gt = gt_graph(relations=[(0, "riding", 1)])
    prediction = graph([first_pixels(PERSON, overlap), HORSE], ["person", "horse"], [(0, "riding", 1)])
    assert (
        rle_ious(*[coco_rles(encode_masks(m[None])) for m in (first_pixels(PERSON, overlap), PERSON)])[0, 0]
        == overlap / 100
    )
    assert sgdet([prediction], [gt])["R@20"] == (1.0 if hit else 0.0)


def test_object_iou_threshold_counts_too():
    gt = gt_graph(relations=[(0, "riding", 1)])
    prediction = graph([PERSON, first_pixels(HORSE, 49)], ["person", "horse"], [(0, "riding", 1)])
    assert sgdet([prediction], [gt])["R@100"] == 0.0


@pytest.mark.parametrize(
    "labels, row",
    [
        (["person", "horse"], (0, "on", 1)),  # wrong predicate
        (["person", "zebra"], (0, "riding", 1)),  # wrong object label
        (["man", "horse"], (0, "riding", 1)),  # wrong subject label (not even a PSG category)
        ([None, "horse"], (0, "riding", 1)),  # unlabeled segments never hit
        (["person", "horse"], (1, "riding", 0)),  # subject and object swapped
    ],
)
def test_wrong_label_or_predicate_misses(labels, row):
    gt = gt_graph(relations=[(0, "riding", 1)])
    prediction = graph([PERSON, HORSE], labels, [row])
    assert sgdet([prediction], [gt])["R@100"] == 0.0


def test_each_gt_triplet_counts_once():
    gt = gt_graph()  # 2 GT triplets
    prediction = graph([PERSON, HORSE, GRASS], GT_LABELS, [(0, "riding", 1), (0, "riding", 1), (0, "riding", 1)])
    assert sgdet([prediction], [gt])["R@20"] == 0.5


def test_graph_constraint_one_predicate_per_row():
    # a multi-label GT pair: each row contributes its one predicate
    gt = gt_graph(relations=[(0, "riding", 1), (0, "sitting on", 1)])
    one_row = graph([PERSON, HORSE], ["person", "horse"], [(0, "riding", 1)])
    two_rows = graph([PERSON, HORSE], ["person", "horse"], [(0, "riding", 1), (0, "sitting on", 1)])
    assert sgdet([one_row], [gt])["R@20"] == 0.5
    assert sgdet([two_rows], [gt])["R@20"] == 1.0


@pytest.mark.parametrize(
    "rank, expected", [(19, (1, 1, 1)), (20, (0, 1, 1)), (49, (0, 1, 1)), (50, (0, 0, 1)), (100, (0, 0, 0))]
)
def test_k_cut_off(rank, expected):
    gt = gt_graph(relations=[(0, "riding", 1)])
    rows = [(1, "on", 0)] * rank + [(0, "riding", 1)]  # the hit is row `rank` (0-based)
    prediction = graph([PERSON, HORSE], ["person", "horse"], rows)
    scores = sgdet([prediction], [gt])
    assert (scores["R@20"], scores["R@50"], scores["R@100"]) == expected


def test_mean_recall_over_all_56_predicates():
    one = gt_graph(relations=[(0, "riding", 1)], file="a.jpg")
    two = gt_graph(relations=[(0, "riding", 1), (1, "standing on", 2)], file="b.jpg")
    pred_one = replace(one, relations=one.relations)  # hits riding
    pred_two = graph(GT_MASKS, GT_LABELS, [(1, "standing on", 2)], file="b.jpg")  # misses riding
    report = evaluate([pred_one, pred_two], [one, two])
    assert report["sgdet"]["R@20"] == pytest.approx((1 + 0.5) / 2)
    assert report["per_predicate"]["riding"]["R@20"] == 0.5 and report["per_predicate"]["riding"]["images"] == 2
    assert report["per_predicate"]["standing on"]["R@20"] == 1.0
    assert report["sgdet"]["mR@20"] == pytest.approx(1.5 / 56)
    single = evaluate([pred_one], [one])
    assert single["sgdet"]["mR@100"] == pytest.approx(1 / 56)


def test_per_predicate_recall_is_per_image_then_averaged():
    # image a: 1 of 3 "riding" triplets hit (1/3); image b: 1 of 1 -> (1/3 + 1) / 2, not 2/4
    a = gt_graph(relations=[(0, "riding", 1), (0, "riding", 2), (1, "riding", 2)], file="a.jpg")
    b = gt_graph(relations=[(0, "riding", 1)], file="b.jpg")
    pa = graph(GT_MASKS, GT_LABELS, [(0, "riding", 1)], file="a.jpg")
    result = triplet_recall([pa, b], [a, b])
    assert result.per_predicate["riding"][20] == pytest.approx((1 / 3 + 1) / 2)


def test_images_without_gt_relations_are_skipped():
    with_rel = gt_graph(relations=[(0, "riding", 1)], file="a.jpg")
    without = gt_graph(relations=[], file="b.jpg")
    prediction = graph(GT_MASKS, GT_LABELS, [(0, "riding", 1)], file="a.jpg")
    report = evaluate([prediction, replace(prediction, file="b.jpg")], [with_rel, without])
    assert report["sgdet"]["R@20"] == 1.0 and report["images"] == 1
    assert report["counts"]["ground_truth_images"] == 2 and report["counts"]["with_relations"] == 1


def test_empty_and_missing_predictions_count_zero_unless_skipped():
    a, b, c = (gt_graph(relations=[(0, "riding", 1)], file=f"{n}.jpg") for n in "abc")
    hit = graph(GT_MASKS, GT_LABELS, [(0, "riding", 1)], file="a.jpg")
    no_rows = graph(GT_MASKS, GT_LABELS, [], file="b.jpg")  # c has no prediction at all
    counted = evaluate([hit, no_rows], [a, b, c])
    assert counted["sgdet"]["R@20"] == pytest.approx(1 / 3) and counted["images"] == 3
    assert counted["counts"]["sgdet"]["missing_predictions"] == 1
    assert counted["counts"]["sgdet"]["empty_predictions_scored_as_zero"] == 2
    assert any("1 ground-truth images have no prediction" in w for w in counted["warnings"])
    skipped = evaluate([hit, no_rows], [a, b, c], skip_empty_predictions=True)
    assert skipped["sgdet"]["R@20"] == 1.0 and skipped["images"] == 1
    assert skipped["protocol"]["skip_empty_predictions"] is True
    assert skipped["counts"]["sgdet"]["empty_predictions_skipped"] == 2


def test_one_mask_per_object_stops_duplicates_scoring_twice():
    gt = gt_graph(relations=[(0, "riding", 1), (0, "feeding", 1)])
    # two copies of the person; each copy carries one of the two GT triplets
    prediction = graph([PERSON, PERSON, HORSE], ["person", "person", "horse"], [(0, "riding", 2), (1, "feeding", 2)])
    report = evaluate([prediction], [gt])
    assert report["sgdet"]["R@20"] == 1.0
    assert report["sgdet_one_mask_per_object"]["R@20"] == 0.5
    # without duplicates the variants agree
    single = graph([PERSON, HORSE], ["person", "horse"], [(0, "riding", 1), (0, "feeding", 1)])
    assert evaluate([single], [gt])["sgdet_one_mask_per_object"]["R@20"] == 1.0


def test_one_mask_per_object_assigns_the_best_mask():
    gt = gt_graph(relations=[(0, "riding", 1)])
    # a rough person (IoU 0.6) carries the triplet, a tight person (IoU 1) carries nothing but owns the object
    prediction = graph([first_pixels(PERSON, 60), PERSON, HORSE], ["person", "person", "horse"], [(0, "riding", 2)])
    report = evaluate([prediction], [gt])
    assert report["sgdet"]["R@20"] == 1.0 and report["sgdet_one_mask_per_object"]["R@20"] == 0.0


def test_one_mask_per_object_ignores_unlabeled_segments():
    gt = gt_graph(relations=[(0, "riding", 1)])
    prediction = graph([PERSON, first_pixels(PERSON, 90), HORSE], [None, "person", "horse"], [(1, "riding", 2)])
    assert evaluate([prediction], [gt])["sgdet_one_mask_per_object"]["R@20"] == 1.0


# -- PredCls -------------------------------------------------------------------------------------


def test_predcls_on_ground_truth_segments():
    gt = gt_graph()
    prediction = replace(gt, relations=[gt.relations[1], Relation(0, "on", 3, 1, 0.5)])
    assert predcls_graph(prediction, gt).segments == gt.segments
    report = evaluate([prediction], [gt], mode="predcls")
    assert report["predcls"]["R@20"] == 0.5 and "sgdet" not in report and "pq" not in report
    both = evaluate([gt], [gt], predcls=[prediction])
    assert both["sgdet"]["R@20"] == 1.0 and both["predcls"]["R@20"] == 0.5
    assert both["per_predicate_predcls"]["riding"]["R@20"] == 0.0


def test_predcls_rejects_other_segments():
    gt = gt_graph()
    moved = graph([first_pixels(PERSON, 90), HORSE, GRASS], GT_LABELS, [(0, "riding", 1)])
    with pytest.raises(EvaluationError, match="segment 0 has a different mask"):
        evaluate([moved], [gt], mode="predcls")
    relabeled = graph(GT_MASKS, ["man", "horse", "grass-merged"], [(0, "riding", 1)])
    with pytest.raises(EvaluationError, match="labeled 'man'"):
        predcls_graph(relabeled, gt)


# -- pairing and errors --------------------------------------------------------------------------


def test_pairing_by_image_id_file_basename_and_stem():
    gts = [gt_graph(file="val2017/000001.jpg", image_id="1"), gt_graph(file="val2017/000002.jpg", image_id="2")]
    by_id = replace(gts[0], file=None)
    by_basename = replace(gts[1], file="000002.jpg", image_id=None)
    pairing = pair_predictions([by_basename, by_id], gts)
    assert [p is not None and p.image_id for p, _ in pairing.pairs] == ["1", None]
    pairing = pair_predictions({"000001": replace(gts[0], file=None, image_id=None)}, gts)  # file stem as key
    assert pairing.pairs[0][0] is not None and pairing.missing == ["2 (val2017/000002.jpg)"]
    unmatched = pair_predictions([replace(gts[0], file="other.jpg", image_id=None)], gts)
    assert unmatched.unmatched == ["other.jpg"]


def test_size_mismatch_and_duplicates_are_errors_naming_the_image():
    gt = gt_graph(image_id="417720", file="val2017/000000417720.jpg")
    small = graph([box(0, 5, 0, 5, shape=(10, 10))], ["person"], file="val2017/000000417720.jpg")
    with pytest.raises(EvaluationError, match=r"image 417720 .*10x10 pixels, the ground truth 20x20"):
        evaluate([small], [gt])
    with pytest.raises(EvaluationError, match="417720.*two predictions"):
        evaluate([gt, gt], [gt])


def test_unknown_ground_truth_predicate_is_an_error():
    gt = gt_graph()
    with pytest.raises(EvaluationError, match="'riding' is not in the vocabulary"):
        evaluate([gt], [gt], predicates=["on", "standing on"])


# -- PQ ------------------------------------------------------------------------------------------


def test_panoptic_quality_hand_computed():
    gt = gt_graph()
    prediction = graph(
        [box(0, 10, 0, 8), HORSE, GRASS],  # person IoU 0.8; the horse called a cow; grass exact
        ["person", "cow", "grass-merged"],
    )
    pq = panoptic_quality([prediction], [gt])
    # person: TP (IoU 0.8); horse: FN; cow: FP; grass: TP (IoU 1)
    assert pq["categories"] == 4
    assert pq["PQ"] == pytest.approx((0.8 + 0 + 0 + 1) / 4)
    assert pq["SQ"] == pytest.approx((0.8 + 0 + 0 + 1) / 4)
    assert pq["RQ"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert (pq["PQ_things"], pq["RQ_things"]) == (pytest.approx(0.8 / 3), pytest.approx(1 / 3))
    assert (pq["PQ_stuff"], pq["SQ_stuff"], pq["RQ_stuff"]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("tight_score, person_pq", [(0.9, 0.8 / 1.5), (0.1, 1.0)])
def test_panoptic_quality_paints_overlaps_by_score(tight_score, person_pq):
    gt = gt_graph()
    # two overlapping person masks: the 80-pixel one with `tight_score`, the exact one with 0.5.
    # Higher score on top: the 80-pixel mask wins its pixels and the exact one keeps a 20-pixel
    # sliver (FP); lower: the exact mask covers the 80-pixel one completely, which vanishes.
    prediction = graph(
        [box(0, 10, 0, 8), PERSON, HORSE, GRASS],
        ["person", "person", "horse", "grass-merged"],
        scores=[tight_score, 0.5, 1, 1],
    )
    pq = panoptic_quality([prediction], [gt])
    assert pq["PQ"] == pytest.approx((person_pq + 1 + 1) / 3)


def test_panoptic_quality_void_and_unlabeled():
    gt = graph([PERSON], ["person"])  # everything else is void
    prediction = graph(
        [box(0, 15, 0, 10), box(15, 20, 15, 20), HORSE],
        ["person", "car", None],  # person spills 50 pixels onto void; car entirely on void; unlabeled ignored
    )
    pq = panoptic_quality([prediction], [gt])
    # person IoU = 100 / (150 - 50 on void) = 1; the car is not a false positive
    assert (pq["PQ"], pq["categories"]) == (1.0, 1)


def test_panoptic_quality_missing_prediction_is_all_false_negatives():
    pq = panoptic_quality([], [gt_graph()])
    assert pq["PQ"] == 0.0 and pq["categories"] == 3


# -- vectorised overlaps -------------------------------------------------------------------------


def random_masks(rng, n, shape=(37, 53)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = rng.uniform(0, 1, (n, 2)) * shape
    radii = rng.uniform(2, 20, (n, 2))
    blobs = ((yy - centres[:, :1, None]) / radii[:, :1, None]) ** 2 + (
        (xx - centres[:, 1:, None]) / radii[:, 1:, None]
    ) ** 2 < 1
    blobs[: n // 4] = rng.random((n // 4, *shape)) < 0.3  # some salt-and-pepper masks
    blobs[-1] = False  # an empty mask
    return blobs


def test_vectorised_iou_equals_a_loop():
    rng = np.random.default_rng(0)
    a, b = random_masks(rng, 12), random_masks(rng, 9)
    loop = np.zeros((len(a), len(b)))
    for i, m in enumerate(a):
        for j, n in enumerate(b):
            union = np.logical_or(m, n).sum()
            loop[i, j] = np.logical_and(m, n).sum() / union if union else 0.0
    rle_a, rle_b = coco_rles(encode_masks(a)), coco_rles(encode_masks(b))
    np.testing.assert_allclose(rle_ious(rle_a, rle_b), loop, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mask_ious(torch.from_numpy(a), torch.from_numpy(b)).numpy(), loop, rtol=0, atol=1e-12)
    expected_inter = (a[:, None] & b[None]).sum((2, 3))
    np.testing.assert_array_equal(rle_intersections(rle_a, rle_b), expected_inter)
    # Row with row: the loop's diagonal; two empty masks give `empty`.
    rows = torch.from_numpy(a[:9]), torch.from_numpy(b)
    np.testing.assert_allclose(paired_mask_ious(*rows).numpy(), np.diagonal(loop), rtol=0, atol=1e-12)
    nothing = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert paired_mask_ious(nothing, nothing).tolist() == [0.0]
    assert paired_mask_ious(nothing, nothing, empty=1.0).tolist() == [1.0]


def test_painted_intersections_equal_a_dense_painting():
    rng = np.random.default_rng(1)
    a, b = random_masks(rng, 10), random_masks(rng, 7)
    score_a, score_b = rng.random(10).round(1), np.zeros(7)  # ties in a; b painted in list order

    def paint(masks, scores):  # lowest score first; on equal scores the earlier mask wins
        labels = np.full(masks.shape[1:], -1)
        for index in sorted(range(len(masks)), key=lambda i: (scores[i], -i)):
            labels[masks[index]] = index
        return np.stack([labels == i for i in range(len(masks))])

    visible_a, visible_b = paint(a, score_a), paint(b, score_b)
    rle_a, rle_b = coco_rles(encode_masks(a)), coco_rles(encode_masks(b))
    hidden_a, hidden_b = hidden_parts(rle_a, score_a), hidden_parts(rle_b, score_b)
    got = visible_intersections(rle_a, hidden_a, rle_b, hidden_b)
    np.testing.assert_array_equal(got, (visible_a[:, None] & visible_b[None]).sum((2, 3)))


# -- CLI -----------------------------------------------------------------------------------------


def _cli_app():
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("eval")(evaluate_command)
    app.command("other")(lambda: None)  # two commands, so the app keeps the `eval` sub-command
    return app


def test_cli_on_folders_of_json_writes_the_report(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for name in ("a", "b"):
        gt = gt_graph(file=f"{name}.jpg")
        gt.save(gt_dir / f"{name}.json")
        graph(GT_MASKS, GT_LABELS, [(0, "riding", 1)], file=f"{name}.jpg").save(pred_dir / f"{name}.json")
    out = tmp_path / "report" / "eval.json"
    result = CliRunner().invoke(
        _cli_app(), ["eval", str(pred_dir), str(gt_dir), "--json", str(out), "--predcls", str(gt_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "R@20" in result.output and "riding" in result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"sgdet", "sgdet_one_mask_per_object", "predcls", "pq", "per_predicate", "images", "protocol"}
    assert set(report["sgdet"]) == {"R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100"}
    assert set(report["pq"]) >= {"PQ", "SQ", "RQ", "PQ_things", "PQ_stuff"}
    assert report["sgdet"]["R@20"] == 0.5 and report["predcls"]["R@20"] == 1.0 and report["images"] == 2
    assert len(report["per_predicate"]) == 56


def test_cli_error_is_a_message_not_a_traceback(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gt_graph(file="a.jpg").save(tmp_path / "gt" / "a.json")
    graph([box(0, 5, 0, 5, shape=(10, 10))], ["person"], file="a.jpg").save(tmp_path / "pred" / "a.json")
    result = CliRunner().invoke(_cli_app(), ["eval", str(tmp_path / "pred"), str(tmp_path / "gt")])
    assert result.exit_code == 2
    assert "error:" in result.output and "10x10 pixels" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(_cli_app(), ["eval", str(tmp_path / "nope"), str(tmp_path / "gt")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output


def test_cli_reads_psg_format(tmp_path):
    from relate_anything import datasets

    gts = [gt_graph(file=f"images/{n}.jpg", image_id=n) for n in ("7", "8")]
    gt_json = datasets.write_psg(gts, tmp_path / "gt", test_image_ids=["7", "8"])
    pred_json = datasets.write_psg(
        [graph(GT_MASKS, GT_LABELS, [(0, "riding", 1)], file="images/7.jpg", image_id="7")], tmp_path / "pred"
    )
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(_cli_app(), ["eval", str(pred_json), str(gt_json), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["sgdet"]["R@20"] == pytest.approx(0.5 / 2)  # image 8 has no prediction: recall 0
    assert report["counts"]["sgdet"]["missing_predictions"] == 1
    train = CliRunner().invoke(_cli_app(), ["eval", str(pred_json), str(gt_json), "--split", "train"])
    assert train.exit_code == 2 and "no ground-truth image with relations in split 'train'" in train.output


def test_category_ids_match_readable_labels():
    """A prediction named "tree" with PSG's id of "tree-merged" hits a ground-truth "tree-merged"."""
    from relate_anything import psg
    from relate_anything.evaluation import evaluate
    from relate_anything.scene_graph import Relation, SceneGraph

    tree = psg.categories().index("tree-merged")
    person = psg.categories().index("person")
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, :4] = True
    masks[1, 4:] = True
    relation = Relation(subject=1, predicate="beside", predicate_id=2, object=0, score=1.0)
    truth = SceneGraph.from_masks(masks, [1, 1], labels=["tree-merged", "person"], category_ids=[tree, person])
    truth = replace(truth.with_relations([relation]), image_id="1")
    named = SceneGraph.from_masks(masks, [1, 1], labels=["tree", "person"], category_ids=[tree, person])
    unnamed_ids = SceneGraph.from_masks(masks, [1, 1], labels=["tree", "person"])
    # Without ids, "tree" is not "tree-merged": the triplet misses, and PQ counts only the person
    # (categories: person 1, tree-merged 0 as a miss, tree 0 as a false positive).
    for prediction, recall, pq in ((named, 1.0, 1.0), (unnamed_ids, 0.0, 1 / 3)):
        report = evaluate([replace(prediction.with_relations([relation]), image_id="1")], [truth])
        assert report["sgdet"]["R@20"] == recall
        assert report["pq"]["PQ"] == pytest.approx(pq)


def test_areas_of_more_than_255_masks():
    from relate_anything.masks import rle_areas as areas

    masks = np.zeros((300, 6, 5), dtype=bool)
    for i in range(300):
        masks[i].flat[: i % 30] = True
    rles = coco_rles(encode_masks(masks))
    assert areas(rles).tolist() == [i % 30 for i in range(300)]
