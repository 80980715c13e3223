#!/usr/bin/env bash
# The GPU figures in the README, as they were produced: one script, run from the repository root on
# a CUDA machine that has CuPy and PyTorch but no internet (this project's lent H100).
#
#   benchmarks/gpu_session.sh STAGE...      stages, in the order given:
#     stash   copy the carried pieces (.gpu/a, .gpu/b, .gpu/c: checkpoint parts, wheels, SST-2) to
#             /tmp/minadapt-stash; the checkpoint travels in parts because one transfer is capped
#     setup   rebuild weights/all-MiniLM-L6-v2 (sha256-checked), `pip install -e .`, and install the
#             `ref` wheels (transformers 4.57.6, adapters 1.3.0, ...) into /tmp/ref, used only by
#             the PyTorch side of the benchmark (the machine's own transformers is 5.x)
#     test    tests/test_gpu.py
#     bench   python benchmarks/harness.py --device gpu --compare torch at L = 8..128
#     train   the default SST-2 training run on the GPU, timed
#
# On a machine with internet none of this staging is needed: pip install -e ".[gpu-cuda13,test,ref]"
# then `python -m pytest tests/test_gpu.py` and `python benchmarks/harness.py --device gpu --compare torch`.
set -uo pipefail
OUT=${OUT:-/tmp/minadapt-out}
STASH=/tmp/minadapt-stash
W=weights/all-MiniLM-L6-v2
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

for stage in "$@"; do
  echo "=== $stage ($(date +%T))"
  case $stage in
    stash)
      mkdir -p $STASH
      for d in .gpu/a .gpu/b .gpu/c; do [ -d $d ] && cp -r $d/. $STASH/; done
      ls $STASH
      ;;
    setup)
      mkdir -p $W
      cat $STASH/part0? > $W/model.safetensors
      cp $STASH/config.json $STASH/tokenizer.json $STASH/vocab.txt $W/
      want=$(cut -d' ' -f1 $STASH/model.sha256)
      got=$(sha256sum $W/model.safetensors | cut -d' ' -f1)
      [ "$want" = "$got" ] || { echo "checkpoint sha256 mismatch: $got"; exit 1; }
      python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ref $STASH/whl/*.whl \
        || exit 1
      printf '#!/bin/sh\nPYTHONPATH=/tmp/ref exec python3 "$@"\n' > /tmp/refpython
      chmod +x /tmp/refpython
      mkdir -p /tmp/data && cp -r $STASH/sst2 /tmp/data/
      { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__,
                    'torch', torch.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion())"
        /tmp/refpython -c "import transformers, adapters; print('ref:', transformers.__version__, adapters.__version__)"
      } 2>&1 | tee $OUT/env.txt
      ;;
    test)
      python3 -m pytest tests/test_gpu.py -p no:nbmake -o addopts='' -v -rs 2>&1 | tee $OUT/test_gpu.log
      ;;
    bench)
      python benchmarks/harness.py --device gpu --compare torch --torch-python /tmp/refpython \
        --lengths ${BENCH_LENGTHS:-8,16,32,64,128} --steps ${BENCH_STEPS:-50} \
        --data-dir /tmp/data/sst2 --json $OUT/bench_gpu.json 2>&1 | tee $OUT/bench_gpu.log
      ;;
    train)
      TIMEFORMAT='train wall (load, train, evaluations, saving): %R s'
      RUN=${RUN_DIR:-/tmp/run}
      time (minadapt train sst2 --device gpu --data-dir /tmp/data/sst2 --out $RUN ${TRAIN_ARGS:-} \
        2>&1 | tr '\r' '\n' | grep -v '^\s*$' > $OUT/train_gpu.log) 2>&1 | tee -a $OUT/train_gpu.log
      tail -n 25 $OUT/train_gpu.log
      cp $RUN/metrics.jsonl $RUN/training.png $OUT/ 2>/dev/null
      minadapt eval --device cpu --adapter $RUN/adapter.safetensors --data-dir /tmp/data/sst2 \
        2>&1 | tail -n 3 | tee -a $OUT/train_gpu.log
      ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
