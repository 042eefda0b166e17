#!/usr/bin/env bash
# Installs the Debian 12 packages daqd needs to build, test and run.
# Skips apt entirely when everything is already present.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config
  libboost-dev libboost-program-options-dev liburing-dev libhdf5-dev hdf5-tools
  cppzmq-dev libzmq3-dev python3-zmq  # the live stream (stream/, docs/STREAM.md) and its Python consumer
  liblz4-dev libsystemd-dev libspdlog-dev libfmt-dev libtomlplusplus-dev nlohmann-json3-dev prometheus-cpp-dev catch2
  python3-h5py python3-hdf5plugin bitshuffle python3-numpy python3-torch python3-pytest python3-pip python3-setuptools
  python3-dev pybind11-dev python3-pybind11  # daqload._native (tools/daqload/setup.py): the compressed-run fast path
  prometheus chromium
  clang libclang-rt-14-dev  # scripts/fuzz.sh: clang 14 and its libFuzzer runtime (libclang_rt.fuzzer)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
