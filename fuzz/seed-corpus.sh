#!/usr/bin/env bash
# Seeds the cargo-fuzz corpus of every target in fuzz/Cargo.toml from the committed fixtures, so that a
# fresh clone does not start fuzzing from nothing (fuzz/corpus/ itself is not committed: it grows to
# thousands of files). Usage, from the repository root:  bash fuzz/seed-corpus.sh [CORPUS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-fuzz/corpus}

# target -> the fixture files that are valid inputs for it (find -name patterns)
seeds_for() {
  case "$1" in
    npy) echo '*.npy' ;;
    npz) echo '*.npz' ;;
    json_weights) echo 'weights*.json dense*.json' ;;
    model) echo '*.keras *.h5' ;;
    torch_pickle) echo '*.pt *.pth *.pkl' ;;
    safetensors) echo '*.safetensors' ;;
    *) echo "seed-corpus.sh: no seeds known for fuzz target '$1'; add them here" >&2; exit 2 ;;
  esac
}

targets=$(awk '/^\[\[bin\]\]/ { bin = 1; next } bin && /^name *=/ { gsub(/[" ]/, "", $0); sub(/name=/, "", $0); print; bin = 0 }' fuzz/Cargo.toml)
for t in $targets; do
  mkdir -p "$out/$t"
  n=0
  for pat in $(seeds_for "$t"); do
    while IFS= read -r -d '' f; do
      # One file per distinct content, named by its hash (as libFuzzer names corpus entries).
      h=$(cksum < "$f" | awk '{ print $1 "-" $2 }')
      cp "$f" "$out/$t/seed-$h"
      n=$((n + 1))
    done < <(find fixtures -type f -name "$pat" -size -4M -print0)
  done
  if [ "$t" = torch_pickle ] && command -v python3 >/dev/null; then
    # The pickle alone too (each archive's data.pkl member), so the unpickler is fuzzed without the zip layer.
    n=$((n + $(python3 - "$out/$t" <<'PY'
import pathlib, sys, zipfile, zlib
n = 0
for f in pathlib.Path("fixtures").rglob("*.pt"):
    try:
        z = zipfile.ZipFile(f)
    except zipfile.BadZipFile:
        continue
    for m in z.namelist():
        if m.endswith("/data.pkl"):
            b = z.read(m)
            pathlib.Path(sys.argv[1], "seed-pkl-%08x" % zlib.crc32(b)).write_bytes(b)
            n += 1
print(n)
PY
)))
  fi
  echo "$t: $n seed files in $out/$t"
done
