#!/usr/bin/env bash
# Fetch ONNX Runtime's official C/C++ headers (Debian trixie's libonnxruntime-dev 1.21) into $1
# without touching the system's package sources. Prints the include directory.
set -euo pipefail
dest=${1:?usage: fetch_headers.sh DEST}
inc="$dest/usr/include/onnxruntime"
if [ -f "$inc/onnxruntime_cxx_api.h" ]; then echo "$inc"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" > "$work/sources.list"
opts=(-oDir::Etc::SourceList="$work/sources.list" -oDir::Etc::SourceParts=/dev/null
      -oDir::State::Lists="$work/lists" -oDir::Cache::Archives="$work/archives" -oAPT::Sandbox::User=root)
apt-get "${opts[@]}" -qq update >&2
(cd "$work" && apt-get "${opts[@]}" -qq download libonnxruntime-dev >&2)
mkdir -p "$dest"
dpkg -x "$work"/libonnxruntime-dev_*.deb "$dest"
test -f "$inc/onnxruntime_cxx_api.h"
echo "$inc"
