"""Bring your own teacher and distilled set; every artifact is validated when loaded, and a bad
file stops the command with exit status 2 and a message naming the file (never a traceback)."""

import json
import os

import numpy as np
import pytest
import torch
import torchvision
from conftest import CLI_COMMON
from PIL import Image
from safetensors.torch import save_file

from geodistill.cli import main
from geodistill.distilled import DistilledSet
from geodistill.files import GeodistillError, load_tensors, save_tensors
from geodistill.models import create_model, load_checkpoint
from geodistill.models.convert import import_state_dict
from geodistill.synth import select_random

IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def test_torchvision_resnet18_state_dict_imports_exactly(tmp_path):
    ref = torchvision.models.resnet18(num_classes=7).eval()
    # what research code writes: nested under "state_dict", with DataParallel's "module." prefix
    path = tmp_path / "rn18.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = import_state_dict(path, arch="resnet18", num_classes=7, image_size=96, **IMAGENET)
    x = torch.rand(2, 3, 96, 96)
    want = ref(
        (x - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-4)


def test_convert_checkpoint_cli_with_our_convnet_measures_accuracy(tmp_path, teacher, capsys):
    pth = tmp_path / "teacher.pth"
    torch.save(teacher.model.state_dict(), pth)
    out = tmp_path / "t.safetensors"
    mean, std = teacher.model.spec["mean"], teacher.model.spec["std"]
    args = [
        "convert-checkpoint",
        str(pth),
        "--arch",
        "convnet-tiny",
        "--num-classes",
        "10",
        "--image-size",
        "8",
    ]
    args += [
        "--in-chans",
        "1",
        "--mean",
        str(mean[0]),
        "--std",
        str(std[0]),
        "--data",
        "digits",
        "--out",
        str(out),
    ]
    assert main([*args, "--device", "cpu"]) == 0
    model, meta = load_checkpoint(out, class_names=[str(i) for i in range(10)], image_shape=(1, 8, 8))
    assert meta["top1"] == pytest.approx(teacher.top1) and meta["converted_from"]["path"] == str(pth)
    assert f"top-1 {teacher.top1:.4f}" in capsys.readouterr().out
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model(x), teacher.model.eval()(x))
    # the converted teacher works in a stage
    assert (
        main(
            [
                "distill",
                *CLI_COMMON,
                "--teacher",
                str(out),
                "--method",
                "random",
                "--ipc",
                "1",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 0
    )


def test_convert_checkpoint_lists_missing_unexpected_and_misshaped(tmp_path, capsys):
    sd = create_model("convnet-tiny", num_classes=10, in_chans=1, image_size=8, seed=0).state_dict()
    sd = {k: v for k, v in sd.items() if k not in ("mean", "std")}
    sd.pop("body.0.weight")
    sd["extra.weight"] = torch.zeros(3)
    sd["head.weight"] = torch.zeros(5, 64)
    torch.save(sd, tmp_path / "bad.pt")
    args = ["convert-checkpoint", str(tmp_path / "bad.pt"), "--arch", "convnet-tiny", "--num-classes", "10"]
    assert (
        main([*args, "--image-size", "8", "--in-chans", "1", "--out", str(tmp_path / "x.safetensors")]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "missing body.0.weight" in err and "unexpected extra.weight" in err and "head.weight (5, 64)" in err
    )
    assert not (tmp_path / "x.safetensors").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/geodistill-convert-pwned",))


def test_convert_checkpoint_never_unpickles_code(tmp_path, capsys):
    torch.save({"state_dict": _Evil()}, tmp_path / "evil.pth")
    args = ["convert-checkpoint", str(tmp_path / "evil.pth"), "--arch", "convnet-tiny", "--num-classes", "10"]
    assert main([*args, "--image-size", "8", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "weights_only=True" in capsys.readouterr().err
    assert not os.path.exists("/tmp/geodistill-convert-pwned")


def test_pth_teacher_points_to_an_existing_command(tmp_path, capsys):
    torch.save({}, tmp_path / "t.pth")
    assert (
        main(["distill", *CLI_COMMON, "--teacher", str(tmp_path / "t.pth"), "--out", str(tmp_path / "d")])
        == 2
    )
    err = capsys.readouterr().err
    assert "geodistill convert-checkpoint" in err
    assert main(["convert-checkpoint", "-h"]) == 0  # the command it names exists


def _write_folder(root, names, size, ext="png", per=2):
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for k in range(per):
            a = np.full((size, size), 20 * c + k, dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"img{k}.{ext}")


def test_folder_of_images_is_evaluated_resized_with_uniform_weights(tmp_path, cli_teacher):
    _write_folder(tmp_path / "syn", [str(i) for i in range(10)], size=20, ext="jpg")
    ds = DistilledSet.from_folder(tmp_path / "syn", [str(i) for i in range(10)], (1, 8, 8))
    assert ds.images.shape == (20, 1, 8, 8) and ds.ipc == 2
    assert torch.equal(ds.labels, torch.arange(10).repeat_interleave(2))
    torch.testing.assert_close(ds.weights, torch.full((20,), 0.5))
    assert abs(ds.images[ds.labels == 3].mean().item() - 60.5 / 255) < 0.02  # pixel values kept
    out = tmp_path / "e"
    args = [
        "evaluate",
        *CLI_COMMON,
        "--teacher",
        str(cli_teacher),
        "--distilled",
        f"theirs=folder:{tmp_path / 'syn'}",
    ]
    assert main([*args, "--epochs", "1", "--seeds", "1", "--out", str(out)]) == 0
    assert list(json.loads((out / "metrics.json").read_text())["methods"]) == ["theirs"]


def test_folder_class_mismatch_is_named(tmp_path, cli_teacher, capsys):
    _write_folder(tmp_path / "syn", [str(i) for i in range(9)] + ["cat"], size=8)
    args = [
        "evaluate",
        *CLI_COMMON,
        "--teacher",
        str(cli_teacher),
        "--distilled",
        f"folder:{tmp_path / 'syn'}",
    ]
    assert main([*args, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "unknown folders ['cat']" in err and "classes without a folder ['9']" in err


def test_image_folder_passed_as_a_set_suggests_folder_prefix(tmp_path):
    ds = select_random(_digits8(), 1, 0)
    ds.save(tmp_path / "set")
    with pytest.raises(GeodistillError, match="folder:"):
        DistilledSet.load(tmp_path / "set" / "images")


def _digits8():
    from geodistill.data import load_dataset

    return load_dataset("digits", image_size=8)


def _bad_sets():
    """(name, mutate(tensors, meta) -> (tensors, meta), expected message)."""

    def no_meta(t, m):
        return t, None

    def nan_pixel(t, m):
        t["images"][3, 0, 2, 2] = float("nan")
        return t, m

    def label_range(t, m):
        t["labels"][0] = 10
        return t, m

    def above_one(t, m):
        t["images"][0, 0, 0, 0] = 1.5
        return t, m

    def int_images(t, m):
        t["images"] = (t["images"] * 255).to(torch.uint8)
        return t, m

    def short_weights(t, m):
        t["weights"] = t["weights"][:-1]
        return t, m

    def negative_weight(t, m):
        t["weights"][0] = -1.0
        return t, m

    def no_labels(t, m):
        del t["labels"]
        return t, m

    return [
        ("no_meta", no_meta, "no class names"),
        ("nan_pixel", nan_pixel, "NaN or Inf"),
        ("label_range", label_range, "above the allowed maximum 9"),
        ("above_one", above_one, "above the allowed maximum 1.0"),
        ("int_images", int_images, "expected a floating-point tensor"),
        ("short_weights", short_weights, "expected 20"),
        ("negative_weight", negative_weight, "below the allowed minimum"),
        ("no_labels", no_labels, "missing tensor 'labels'"),
    ]


@pytest.mark.parametrize("name,mutate,message", _bad_sets(), ids=[b[0] for b in _bad_sets()])
def test_bad_distilled_sets_exit_2_naming_the_file(tmp_path, cli_teacher, capsys, name, mutate, message):
    d = tmp_path / name
    select_random(_digits8(), 2, 0).save(d, png=False)
    (d / "manifest.json").unlink()
    t, meta = load_tensors(d / "distilled.safetensors")
    t, meta = mutate(t, meta)
    save_file(t, str(d / "distilled.safetensors")) if meta is None else save_tensors(
        d / "distilled.safetensors", t, meta
    )
    args = ["evaluate", *CLI_COMMON, "--teacher", str(cli_teacher), "--distilled", str(d)]
    assert main([*args, "--epochs", "1", "--seeds", "1", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert str(d / "distilled.safetensors") in err and message in err, err
    assert not (tmp_path / "e").exists()  # nothing written for a refused input


def test_bad_teachers_are_refused(tmp_path, cli_teacher, capsys):
    t, meta = load_tensors(cli_teacher)
    key = next(k for k in t if k.endswith("weight"))
    t[key] = t[key].clone()
    t[key].view(-1)[0] = float("nan")
    save_tensors(tmp_path / "nan.safetensors", t, meta)
    save_tensors(tmp_path / "nospec.safetensors", t, {"class_names": meta["class_names"]})
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    for f, msg in [("nan", "NaN or Inf"), ("nospec", "no complete model spec"), ("junk", "not a readable")]:
        path = tmp_path / f"{f}.safetensors"
        assert main(["distill", *CLI_COMMON, "--teacher", str(path), "--out", str(tmp_path / f"d{f}")]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and msg in err, err
        assert not (tmp_path / f"d{f}").exists()
