#!/usr/bin/env bash
# Every GPU measurement the issues ask for, in as few device calls as possible.
#
# On the lent GPU machine (the `device` tool), from the repository root, with the photos and the
# wheels it lacks carried along (prepared here once):
#
#   mkdir -p .shared && cp -r ../shared/images .shared/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       pycocotools==2.0.11 segment-anything==1.0
#   # device run, carry [".shared", ".whl"]; the copied tree has no .git, so name the commit:
#   RELATE_ANYTHING_GIT_COMMIT=<git rev-parse HEAD> bash bench/gpu_session.sh tests pipeline   # ~10 min
#   RELATE_ANYTHING_GIT_COMMIT=<...> bash bench/gpu_session.sh training batch stages
#
# Stages: tests (every test that needs CUDA), pipeline (issue 7: ViT-H, B and L, bf16/fp32, batch
# 1 and 8, with Meta's reference in the same run), pipeline-h (ViT-H only, a shorter run),
# training (issue 3: head training and feature collection), batch (issue 6: job vs pipeline),
# stages (where the time of a ViT-H photo goes), video (issue 13: frames/s and stage times of the
# iou and sam2 trackers with ViT-H bf16 on a 1080p clip, then peak RSS and GPU memory over a
# 600-frame 1080p clip; estimated ~6 min, a third of it drawing and encoding the clips), distill
# (issue 15: collection and training images/s, ViT-H bf16 teacher, ViT-B student; est. ~2 min).
# The machine reaches no hub, so these stages use random weights of the published sizes
# (--random vit_h, --teacher vit_h --student vit_b); where the weights are at hand, the scripts
# take them by reference instead: bench/video.py --sam facebook/sam-vit-huge --ram ram_epoch12.pth
# --sam2 facebook/sam2.1-hiera-tiny, bench/distill_throughput.py --teacher-sam facebook/sam-vit-huge
# --teacher-ram ram_epoch12.pth --student-sam facebook/sam-vit-base.
#
# What comes back: the machine returns at most 8 files from $OUT (2 folders down), so $OUT holds
# three, rewritten after every stage so that a run cut short keeps the stages it finished:
#   results.tar.gz  every result record (bench/records.py), named as in bench/results/
#   logs.tar.gz     one log per stage, and gpu.txt (GPU, driver, torch, transformers)
#   summary.txt     each stage's command, exit status and last lines
# Back here: tar -xzf FILES_AT/results.tar.gz -C bench/results && python bench/report.py
# Without $OUT (a run by hand) they go to ./gpu-results.
set -uo pipefail
cd "$(dirname "$0")/.."
STAGES="tests pipeline pipeline-h training batch stages video distill"
for stage in "$@"; do  # before any work: a typo must not cost device time
    case " $STAGES " in
        *" $stage "*) ;;
        *)
            echo "unknown stage $stage ($STAGES)" >&2
            exit 2
            ;;
    esac
done
OUT="${OUT:-$PWD/gpu-results}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX")"
RESULTS="$WORK/results" LOGS="$WORK/logs"
mkdir -p "$OUT" "$RESULTS" "$LOGS"
# Every bench script writes its record to its default name, in $RESULTS (see bench/records.py).
export PYTHONUNBUFFERED=1 RELATE_ANYTHING_BENCH_RESULTS="$RESULTS"
export RELATE_ANYTHING_SHARED="${RELATE_ANYTHING_SHARED:-$PWD/.shared}"
if [ -d .whl ] && ! python3 -c "import pycocotools, segment_anything" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
IMAGES="$RELATE_ANYTHING_SHARED/images"
: > "$OUT/summary.txt"
if [ ! -d "$IMAGES" ]; then
    # The tests' photos (at most 640 px) are smaller than ../shared/images (800 to 2250 px), so
    # the figures differ; the records name the folder they used.
    IMAGES="$PWD/tests/data/images"
    echo "warning: no .shared/images carried; using $IMAGES (smaller photos)" | tee -a "$OUT/summary.txt"
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    echo "commit ${RELATE_ANYTHING_GIT_COMMIT:-unknown (set RELATE_ANYTHING_GIT_COMMIT)}"
} > "$LOGS/gpu.txt" 2>&1
cat "$LOGS/gpu.txt" >> "$OUT/summary.txt"

bundle() {  # the records and logs so far, into $OUT
    tar -czf "$OUT/results.tar.gz.tmp" -C "$RESULTS" . && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
    tar -czf "$OUT/logs.tar.gz.tmp" -C "$LOGS" . && mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

status=0
run() {  # run NAME COMMAND...: the command's output in NAME.log, its status remembered
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    "$@" > "$LOGS/$name.log" 2>&1
    local code=$?
    { echo "   exit $code; last lines:"; tail -n 12 "$LOGS/$name.log"; } | tee -a "$OUT/summary.txt"
    [ $code -eq 0 ] || status=$code
    bundle
}
bundle

for stage in "$@"; do
    case $stage in
        tests)
            run gpu-tests python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests
            ;;
        pipeline | pipeline-h)
            # One process and one record per variant, ViT-H (the target) first: a run cut short by
            # the device's 10-minute limit keeps what it finished.
            variants="vit_h vit_b vit_l"
            [ "$stage" = pipeline-h ] && variants=vit_h
            for variant in $variants; do
                run "pipeline-$variant" python3 bench/pipeline.py --device cuda --variants "$variant" --dtypes bf16,fp32 \
                    --batch-sizes 1,8 --images 10 --images-dir "$IMAGES" --reference-python python3
            done
            ;;
        training)
            run train python3 bench/train_throughput.py --device cuda --batch-sizes 4,16,32 --seconds 15
            run collect python3 bench/collect_throughput.py --random vit_h --device cuda --bf16 --images 20 \
                --random-thresholds
            ;;
        batch)
            run batch python3 bench/batch_throughput.py --random vit_h --device cuda --bf16 --images 64 --batch-size 8 \
                --photos "$IMAGES" --random-thresholds
            ;;
        stages)
            run stages python3 bench/pipeline_stages.py --variant vit_h --device cuda --dtype bf16 --points-per-side 32 \
                --photos 3 --images-dir "$IMAGES"
            ;;
        video)
            run video python3 bench/video.py --random vit_h --bf16 --device cuda --trackers iou,sam2 --size 1920,1080 \
                --frames 60 --loop 30 --points-per-side 32 --masks 30
            # A 10-minute clip at 5 fps is --frames 3000 (about 5 times as long).
            run video-memory python3 bench/video.py --what memory --random vit_h --bf16 --device cuda --trackers iou \
                --size 1920,1080 --frames 600 --loop 30 --checkpoints 6
            ;;
        distill)
            run distill python3 bench/distill_throughput.py --teacher vit_h --student vit_b --bf16 --device cuda \
                --images 64 --size 640,480 --epochs 3 --batch-size 16
            ;;
    esac
done
rm -rf "$WORK"
exit $status
