"""Opt-in: GEODISTILL_DATA=../shared/datasets python -m pytest tests/test_integration_cifar10.py"""

import os
from pathlib import Path

import pytest

from geodistill.data import load_dataset

ROOT = Path(os.environ.get("GEODISTILL_DATA", "/nonexistent")) / "cifar10"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ROOT.is_dir(), reason="set GEODISTILL_DATA to a folder holding cifar10/"),
]


def test_cifar10_imagefolder_has_standard_order_counts_and_stats():
    d = load_dataset(f"folder:{ROOT}")
    assert d.class_names == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert d.class_counts() == [5000] * 10 and len(d.y_test) == 10_000
    assert d.image_shape == (3, 32, 32)
    mean, std = d.channel_stats()  # published: (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    for got, want in zip(mean + std, (0.4914, 0.4822, 0.4465, 0.2470, 0.2435, 0.2616)):
        assert got == pytest.approx(want, abs=0.01)
