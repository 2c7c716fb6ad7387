#!/bin/sh
# Builds the C embedding example: compiles the example model to a static library with its
# header, then links main.c against it. BERTC names the bertc binary, OUT the build folder.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/build}
mkdir -p "$out"
${BERTC:-bertc} compile "$here/../bert-micro-random" -o "$out/encoder" --emit staticlib --output mean -q
${CC:-cc} -O2 -o "$out/embed" "$here/main.c" -I"$out" "$out/libencoder.a"
echo "$out/embed"
