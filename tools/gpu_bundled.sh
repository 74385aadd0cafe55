#!/usr/bin/env bash
# The bundled model's GPU run (docs/training.md, "The bundled model"), as run on the project's
# lent GPU machine (one H200, python3 with torch/onnxruntime, no librosa, nothing fetchable).
#
# Here, first:  .venv/bin/python -m training bundled --stage data
#               .venv/bin/python tools/pack_prepared.py pack runs/bundled/prepared gpu/prepared.tar.xz
#               cp runs/bundled/data-summary.json gpu/
# There:        bash tools/gpu_bundled.sh          (with gpu/ carried; results land in $OUT)
# Here, after:  put $OUT/coascent-<v>.pt at runs/<v>/coascent/checkpoint.pt (v = the variant
#               with the best validation Top-1 in fit-<v>.json), then
#               .venv/bin/python -m training bundled --stage install --work runs/<v>
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
DEVICE=${DEVICE:-cuda}     # DEVICE=cpu EXTRA="--preset tiny ..." for a dry run elsewhere
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - start) )); }

nvidia-smi -L
python3 -c "import onnxruntime as o, torch, numpy; print('ort', o.__version__,
o.get_available_providers(), 'torch', torch.__version__, 'numpy', numpy.__version__)"

fit_variant() {  # name, budget (s), extra flags
  local v=$1 budget=$2; shift 2
  mkdir -p "runs/$v"
  cp gpu/data-summary.json "runs/$v/"
  [ -d "runs/$v/prepared" ] || python3 tools/pack_prepared.py unpack gpu/prepared.tar.xz \
    "runs/$v/prepared"
  timeout "$budget" python3 -m training bundled --stage fit --work "runs/$v" --device "$DEVICE" \
    --no-progress $EXTRA "$@" 2>&1 | tee "$OUT/fit-$v.log" | grep -v "^INFO training.*epoch"
  cp "runs/$v/fit-summary.json" "$OUT/fit-$v.json"
  cp "runs/$v/coascent/checkpoint.pt" "$OUT/coascent-$v.pt"
}

fit_variant bundled 200
echo "== after variant A: $(left 99999) s"
[ "$(left 380)" -gt 120 ] && fit_variant bundled_b 130 --seed 1 --pretrain-epochs 80

[ "$(left 440)" -gt 60 ] && timeout "$(left 440)" python3 benchmarks/bench_models.py \
  --presets small,paper --quick 2>&1 | tee "$OUT/bench_models.txt"
tar czf "$OUT/logs.tgz" runs/*/pretrain/log.csv runs/*/classify/log.csv \
  runs/*/coascent/log.csv runs/*/*/config.json 2>/dev/null
echo "== done in $(( $(date +%s) - start )) s"
