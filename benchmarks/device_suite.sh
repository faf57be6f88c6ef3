#!/usr/bin/env bash
# One lease of a lent GPU in one command: the CUDA-only tests, then benchmarks/gpu_suite.sh shortened to fit the
# device tool's limits (10 minutes a command, 15 minutes of device time a session, a 64 MiB tree).
# Prepare here (once; .device/ is ignored by git):
#   python benchmarks/pack_for_device.py pack ../shared/data/cifar10-jpeg .device/cifar10-jpeg.npz
#   python -m pip download --no-deps -d .device/whl pyro-ppl==1.9.2 pyro-api==0.1.2
# then: device run, command "bash benchmarks/device_suite.sh", carry [".device"], timeout_s 590.
# SUITE_MINUTES (default 3) of SimCLR pretraining, SUITE_NEWLOSS_EPOCHS (default 3); everything under $OUT.
set -uo pipefail
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl \
  || { echo "the pyro wheels are missing from .device/whl (see this script's header)"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD PROBCLR_DATA_DIR=/tmp/data PROBCLR_CACHE_DIR=/tmp/cache
python3 benchmarks/pack_for_device.py unpack .device/cifar10-jpeg.npz /tmp/data/cifar10-jpeg
{ nvidia-smi; python3 -c "import torch, torchvision; print(torch.__version__, torch.version.cuda, torchvision.__version__,
  torch.cuda.get_device_name(0))"; } > "$out/device.txt" 2>&1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/train/test_cuda.py tests/data/test_encoded.py -k "cuda" > "$out/cuda_tests.log" 2>&1
echo "cuda tests: exit $?" >> "$out/cuda_tests.log"
PYTHON=python3 SUITE_MINUTES=${SUITE_MINUTES:-3} SUITE_NEWLOSS_EPOCHS=${SUITE_NEWLOSS_EPOCHS:-3} \
  timeout 390 bash benchmarks/gpu_suite.sh /tmp/suite > "$out/suite.log" 2>&1
echo "suite: exit $?" >> "$out/suite.log"
cp /tmp/suite/suite.json /tmp/suite/suite.md "$out/" 2>/dev/null
tail -n 3 "$out/cuda_tests.log" "$out/suite.log"
