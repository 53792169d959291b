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
#   # device run, carry [".shared", ".whl"]:
#   bash bench/gpu_session.sh tests pipeline       # ~10 min: GPU tests, issue 7's bench
#   bash bench/gpu_session.sh training batch       # issue 3's and issue 6's benches
#
# Stages: tests (every test that needs CUDA), pipeline (issue 7: ViT-H, B and L, bf16/fp32, batch
# 1 and 8, with Meta's reference in the same run), pipeline-h (ViT-H only, a shorter run),
# training (issue 3: head training and feature collection), batch (issue 6: job vs pipeline).
# Results go to $OUT (or ./gpu-results): one JSON and one log per stage.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RELATE_ANYTHING_SHARED="${RELATE_ANYTHING_SHARED:-$PWD/.shared}"
if [ -d .whl ] && ! python3 -c "import pycocotools, segment_anything" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
IMAGES="$RELATE_ANYTHING_SHARED/images"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >> "$OUT/gpu.txt" 2>&1

status=0
run() {  # run NAME COMMAND...: the command's output in $OUT/NAME.log, its status remembered
    local name=$1
    shift
    echo "== $name: $*"
    "$@" > "$OUT/$name.log" 2>&1
    local code=$?
    echo "   exit $code; last lines:"
    tail -n 12 "$OUT/$name.log"
    [ $code -eq 0 ] || status=$code
}

for stage in "$@"; do
    case $stage in
        tests)
            run gpu-tests python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests
            ;;
        pipeline | pipeline-h)
            # One process and one JSON per variant, ViT-H (the target) first: a run cut short by
            # the device's 10-minute limit keeps what it finished.
            variants="vit_h vit_b vit_l"
            [ "$stage" = pipeline-h ] && variants=vit_h
            for variant in $variants; do
                run "pipeline-$variant" python3 bench/pipeline.py --device cuda --variants "$variant" --dtypes bf16,fp32 \
                    --batch-sizes 1,8 --images 10 --images-dir "$IMAGES" --reference-python python3 \
                    --out "$OUT/pipeline-$variant.json"
            done
            ;;
        training)
            run train python3 bench/train_throughput.py --device cuda --batch-sizes 4,16,32 --seconds 15 --out "$OUT/train.json"
            run collect python3 bench/collect_throughput.py --random vit_h --device cuda --bf16 --images 20 \
                --random-thresholds --out "$OUT/collect.json"
            ;;
        batch)
            run batch python3 bench/batch_throughput.py --random vit_h --device cuda --bf16 --images 64 --batch-size 8 \
                --photos "$IMAGES" --random-thresholds --out "$OUT/batch.json"
            ;;
        *)
            echo "unknown stage $stage (tests, pipeline, pipeline-h, training, batch)" >&2
            exit 2
            ;;
    esac
done
exit $status
