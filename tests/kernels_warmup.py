"""Compile numba's loops into their cache (encodec_cli/*/__pycache__): a live 24 kHz stream
and an LM-coded file, both ways. conftest.py runs this once,
before pytest-xdist's workers start, where the cache is empty (a fresh checkout): otherwise
each worker, and each subprocess a test starts, compiles the same loops again."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from encodec_cli import api
from encodec_cli.testing import write_checkpoints


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        ck = write_checkpoints(Path(folder), seed=1)
        w, lw = ck["encodec_24khz"], ck["encodec_lm_24khz"]
        rng = np.random.default_rng(0)
        dec = api.DecompressOptions(weights=w, lm_weights=lw, download_bars=False)
        for seconds, live in ((1, True), (2, False)):
            x = (0.1 * rng.standard_normal(seconds * 24000)).astype(np.float32)
            opts = api.CompressOptions(bandwidth=1.5, live=live, weights=w, lm_weights=lw, raw_fallback=False,
                                       download_bars=False)
            api.decompress(api.compress(x, 24000, opts), dec)


if __name__ == "__main__":
    main()
