#!/usr/bin/env bash
# Run HERE (not on the GPU machine, which has no network): fetches what the GPU machine lacks into
# .deps/ (git-ignored via .git/info/exclude):
#   - the PCRE2 and zlib -dev packages (headers), unpacked with dpkg -x;
#   - cpp-httplib (`megatron serve`): Debian builds it as a library, so its header, libcpp-httplib.so
#     and what the header includes and the library loads (OpenSSL and Brotli headers, Brotli's
#     runtime) unpacked into .deps/httplib, where apps/cpp_httplib.cmake looks;
#   - the cudnn-frontend headers (header-only C++ API of cuDNN, for the fused flash attention in
#     src/kernels/cuda/attention_cudnn.cpp): the nvidia-cudnn-frontend wheel fetched with
#     pip download, its include/ unzipped into .deps/cudnn_frontend/include.
# scripts/device-test.sh points the build at them when .deps/ travels (carry: [".deps"]); cuDNN 9
# itself (libcudnn.so.9, cudnn.h) is installed on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps && cd .deps
apt-get download libpcre2-dev libpcre2-8-0 zlib1g-dev
for f in libpcre2*.deb; do dpkg -x "$f" pcre2; done
dpkg -x zlib1g-dev*.deb zlib
rm -f ./*.deb
rm -rf httplib
lib=$(apt-cache depends libcpp-httplib-dev | grep -oE 'libcpp-httplib[0-9.]+' | head -1)  # e.g. libcpp-httplib0.11
apt-get download libcpp-httplib-dev "$lib" libssl-dev libbrotli-dev libbrotli1
for f in ./*.deb; do dpkg -x "$f" httplib; done
rm -rf ./*.deb httplib/usr/share
find httplib -name '*.a' -delete  # OpenSSL's static libraries: not needed, 10 MB
test -f httplib/usr/include/httplib.h

rm -rf cudnn_frontend wheel && mkdir -p cudnn_frontend wheel
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d wheel nvidia-cudnn-frontend
python3 -m zipfile -e wheel/nvidia_cudnn_frontend-*.whl wheel/x
mv wheel/x/include cudnn_frontend/include
rm -rf wheel
test -f cudnn_frontend/include/cudnn_frontend.h
exclude=$(git rev-parse --git-path info/exclude)  # .git/info/exclude (a worktree's .git is a file)
grep -qx "/.deps/" "$exclude" 2>/dev/null || echo "/.deps/" >> "$exclude"
