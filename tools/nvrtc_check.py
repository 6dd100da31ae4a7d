"""Compile CUDA C sources with NVRTC for the given architectures, with gpusim's compile options; no GPU needed.

Usage: python tools/nvrtc_check.py sm_80 sm_90 kernels/*.cu

Each file is compiled as the runtime compiles it (local ``#include "x.cuh"`` inlined, the options of
``gpusim.kernelsrc.compile_options``). Prints one line per file and architecture, with the compiler
log for failures and warnings; exits 1 if any compilation failed, 2 on a usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

from gpusim import kernelsrc  # noqa: E402


def check(archs: list[str], files: list[str]) -> int:
    """Compile every file for every arch; return the number of failures."""
    failures = 0
    for name in files:
        path = Path(name)
        code = kernelsrc.expand_includes(path.read_text(), path.parent)
        for arch in archs:
            ok, log = kernelsrc.nvrtc_compile(code, path.name, arch)
            print(f"{'OK  ' if ok else 'FAIL'} {arch} {name}")
            if log:
                print(log)
            failures += not ok
    return failures


def main(argv: list[str]) -> int:
    archs = [a for a in argv if a.startswith(("sm_", "compute_"))]
    files = [a for a in argv if a not in archs]
    if not archs or not files:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    return 1 if check(archs, files) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
