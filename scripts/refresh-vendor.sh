#!/usr/bin/env bash
# Refresh the web chat's vendored libraries (gateway/static/vendor/) from the npm registry.
#
#   scripts/refresh-vendor.sh            re-fetch the pinned versions (vendor/versions.json)
#   scripts/refresh-vendor.sh latest     move to the latest published versions
#   scripts/refresh-vendor.sh marked@18.2.1 dompurify@3.5.0
#
# Copies each package's browser ES module and its license files byte for byte, and writes
# versions.json (version, npm integrity, sha256 of each file) so that tests/unit/test_webchat_assets.py
# can tell a hand-edited file from a vendored one. Needs node and npm; writes nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
VENDOR=gateway/static/vendor
declare -A FILES=(
  [marked]="lib/marked.esm.js:marked.esm.js LICENSE:marked.LICENSE"
  [dompurify]="dist/purify.es.mjs:purify.es.mjs LICENSE:dompurify.LICENSE"
)

pinned() {  # the version vendor/versions.json pins for $1
  node -e 'const v = require(process.argv[1]); console.log(v[process.argv[2]].version)' "$PWD/$VENDOR/versions.json" "$1"
}

specs=()
if [[ $# -eq 0 ]]; then
  for name in marked dompurify; do specs+=("$name@$(pinned "$name")"); done
elif [[ $1 == latest ]]; then
  specs=(marked@latest dompurify@latest)
else
  specs=("$@")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
entries=()
for spec in "${specs[@]}"; do
  name=${spec%@*}
  [[ -n ${FILES[$name]:-} ]] || { echo "refresh-vendor: unknown package $name (marked or dompurify)" >&2; exit 2; }
  (cd "$work" && npm pack --silent "$spec" > "$name.tgz.name")
  tarball="$work/$(cat "$work/$name.tgz.name")"
  version=$(npm view "$spec" version | tail -n 1)
  integrity=$(npm view "$name@$version" dist.integrity)
  mkdir -p "$work/$name" && tar xzf "$tarball" -C "$work/$name"
  files=()
  for pair in ${FILES[$name]}; do
    src=${pair%%:*}
    dst=${pair#*:}
    cp "$work/$name/package/$src" "$VENDOR/$dst"
    files+=("\"$dst\": \"$(sha256sum "$VENDOR/$dst" | cut -d' ' -f1)\"")
  done
  # DOMPurify is dual-licensed (Apache-2.0 or MPL-2.0): ship both texts.
  if [[ $name == dompurify && -f "$work/$name/package/LICENSE-MPL" ]]; then
    cp "$work/$name/package/LICENSE-MPL" "$VENDOR/dompurify.LICENSE-MPL"
    files+=("\"dompurify.LICENSE-MPL\": \"$(sha256sum "$VENDOR/dompurify.LICENSE-MPL" | cut -d' ' -f1)\"")
  fi
  joined=$(IFS=,; echo "${files[*]}")
  entries+=("  \"$name\": {\"version\": \"$version\", \"integrity\": \"$integrity\", \"files\": {${joined//,/, }}}")
  echo "refresh-vendor: $name $version"
done
{
  echo "{"
  for i in "${!entries[@]}"; do
    [[ $i -lt $((${#entries[@]} - 1)) ]] && echo "${entries[$i]}," || echo "${entries[$i]}"
  done
  echo "}"
} > "$VENDOR/versions.json"
