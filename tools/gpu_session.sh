#!/usr/bin/env bash
# The GPU checks of a session that is lent a device machine, as ONE call of the device tool (see
# ../.library/device/README.md): the `gpu`-marked tests and the field benchmarks on the GPU
# (single-process kernels and an MPI rank's partitioned sweeps), logs and results into $OUT.
#
# Here, once per checkout (the device image lacks pydantic and zarr; they travel as wheels):
#     echo /.whl/ >> .git/info/exclude && tools/gpu_session.sh --fetch-wheels
# Then, through the device tool:  run(command="tools/gpu_session.sh", carry=[".whl"], timeout_s=540)
# and copy what comes back from $OUT into benchmarks/results/ (the benchmark names its files with the
# device and the date). Each part is time-boxed so that the call ends inside one device command.
set -uo pipefail
cd "$(dirname "$0")/.."

# the pure-Python (and pydantic-core's compiled) dependencies the image does not have, at the versions
# this project is tested with
WHEELS="pydantic==2.12.5 pydantic_core==2.41.5 typing-inspection==0.4.2 annotated-types==0.7.0 zarr==3.1.6
  numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0"

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p .whl
    for w in $WHEELS; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$w" || exit 1
    done
    ls .whl
    exit 0
fi

OUT="${OUT:-/tmp/gpu_session}"
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba_cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/device.txt" 2>&1

rc=0
# 1. the GPU tests (kernels bitwise against the CPU twins, the GPU simulation, the GPU ranks' sweeps)
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_gpu.log" || rc=1
# 2. the field benchmarks on the GPU, partitioned rows included (JSON + Markdown into $OUT)
timeout 200 python3 benchmarks/bench_fields.py --backend cuda --sizes 128 256 --steady-sizes 128 --step-sizes 128 \
    --repeat 5 --retries 0 --out "$OUT" 2>&1 | tee "$OUT/bench_fields.log" || rc=1
exit $rc
