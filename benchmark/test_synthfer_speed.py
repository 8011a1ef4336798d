"""Benchmark: generate 10,000 SynthFER images at 64 px (target < 60 s on 2 cores)::

    .venv/bin/python -m pytest benchmark/test_synthfer_speed.py --benchmark-only -s
"""
from __future__ import annotations

from PIL import Image

from ifer.data.synthfer import SynthFERConfig, generate_synthfer

CFG = SynthFERConfig(res=64, n_train_identities=400, n_val_identities=50, n_test_identities=50, images_per_identity=20)


def test_generate_10k_64px(benchmark, tmp_path):
    manifest = benchmark.pedantic(generate_synthfer, args=(tmp_path / "sf", CFG), kwargs={"workers": 2},
                                  rounds=1, iterations=1)
    assert sum(manifest["split_sizes"].values()) == 10_000 and len(manifest["files"]) == 10_000
    for rel in list(manifest["files"])[::1000]:
        with Image.open(tmp_path / "sf" / rel) as im:
            im.verify()
    assert len(list((tmp_path / "sf").glob("*/*.png"))) == 10_000
