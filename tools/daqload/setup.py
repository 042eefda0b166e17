"""Builds daqload's native extension, daqload._native (daqload/_native.cpp).

The package metadata is in pyproject.toml; this file only adds the extension.
It compiles daqd's header-only bitshuffle/LZ4 codec from the checkout
(../../codec/include, or $DAQD_CODEC_INCLUDE) with pybind11 and links liblz4.
Debian 12: g++ python3-dev pybind11-dev python3-pybind11 liblz4-dev.

    /usr/bin/python3 -m pip install --no-build-isolation --no-deps tools/daqload   # installs it
    /usr/bin/python3 setup.py build_ext --inplace                                 # next to the sources (tests)

DAQLOAD_NO_NATIVE=1 installs the pure-Python package (compressed runs are
then read through h5py + hdf5plugin).
"""

import os
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _codec_include():
    d = os.environ.get("DAQD_CODEC_INCLUDE") or os.path.join(HERE, "..", "..", "codec", "include")
    d = os.path.normpath(d)
    if not os.path.isfile(os.path.join(d, "daqd", "codec", "bslz4.hpp")):
        sys.exit(f"daqload: daqd's codec header is not at {d}/daqd/codec/bslz4.hpp: build from a daqd checkout "
                 "(tools/daqload), set DAQD_CODEC_INCLUDE, or DAQLOAD_NO_NATIVE=1 for the pure-Python package")
    return d


def _extensions():
    if os.environ.get("DAQLOAD_NO_NATIVE", "").strip().lower() in ("1", "true", "yes", "on"):
        return []
    try:
        import pybind11
    except ImportError:
        sys.exit("daqload: pybind11 is not installed for this Python (Debian: apt install pybind11-dev "
                 "python3-pybind11); or DAQLOAD_NO_NATIVE=1 for the pure-Python package")
    inc = _codec_include()
    return [Extension(
        "daqload._native",
        sources=["daqload/_native.cpp"],
        depends=[os.path.join(inc, "daqd", "codec", "bslz4.hpp")],
        include_dirs=[pybind11.get_include(), inc],
        libraries=["lz4"],
        language="c++",
        # SSE2 is baseline on x86-64; the codec uses it there, portable code elsewhere.
        extra_compile_args=["-std=c++17", "-O2", "-g0", "-fvisibility=hidden", "-Wall"],
    )]


setup(ext_modules=_extensions())
