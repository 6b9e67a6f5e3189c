import pytest
import torch

from geodistill.config import EvalConfig
from geodistill.distilled import DistilledSet
from geodistill.evaluate import evaluate_distilled, image_weights, kd_loss
from geodistill.synth import select_random


def test_kd_loss_zero_iff_same_logits_and_scales_with_t2():
    t = torch.randn(5, 4)
    assert kd_loss(t, t, 20.0).abs().max() < 1e-5
    s = torch.randn(5, 4)
    assert (kd_loss(s, t, 1.0) > 0).all()
    # kd(s, t, T) = T^2 * KL at temperature 1 of the logits divided by T (Hinton et al.)
    torch.testing.assert_close(kd_loss(s, t, 100.0), 1e4 * kd_loss(s / 100, t / 100, 1.0))


def test_image_weights_uniform_are_one_and_follow_barycenter_mass():
    ds = DistilledSet(
        torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]), torch.tensor([0.5, 0.5, 0.9, 0.1]), ["a", "b"]
    )
    torch.testing.assert_close(image_weights(ds), torch.tensor([1.0, 1.0, 1.8, 0.2]))


def test_students_learn_from_a_distilled_set(teacher, digits, rt):
    ds = select_random(digits, 5, seed=0)
    cfg = EvalConfig(epochs=60, seeds=2, batch_size=25, lr=0.01)
    score = evaluate_distilled(ds, teacher.model, digits, cfg, rt)
    assert score.seeds == 2 and len(score.runs) == 2
    assert 0.4 < score.top1 <= 1.0  # far above chance (0.1) after a few seconds
    assert score.top1_std >= 0 and score.top5 >= score.top1


def test_class_mismatch_is_refused(teacher, digits, rt):
    ds = select_random(digits, 1, seed=0)
    ds.class_names = [f"x{i}" for i in range(10)]
    with pytest.raises(Exception, match="do not match"):
        evaluate_distilled(ds, teacher.model, digits, EvalConfig(epochs=1, seeds=1), rt)


def test_completed_students_are_not_retrained(teacher, digits, rt):
    ds = select_random(digits, 2, seed=0)
    cfg = EvalConfig(epochs=2, seeds=2, batch_size=20)
    fake = {"seed": 0, "top1": 0.5, "top5": 0.9, "seconds": 1.0}
    trained = []
    score = evaluate_distilled(
        ds,
        teacher.model,
        digits,
        cfg,
        rt,
        completed=[fake],
        on_student=lambda m, r: trained.append(r["seed"]),
    )
    assert trained == [1] and [r["seed"] for r in score.runs] == [0, 1]
    assert score.runs[0] is fake or score.runs[0] == fake


def test_cross_architecture_students_get_their_own_rows_and_recipes(tmp_path):
    import json

    import yaml

    from geodistill.cli import main
    from geodistill.evaluate.student import recipe_for

    cfg = EvalConfig(lr=0.001, recipes={"convnet": {"lr": 0.01, "epochs": 2}})
    assert recipe_for(cfg, "convnet").lr == 0.01 and recipe_for(cfg, "convnet").epochs == 2
    assert recipe_for(cfg, "mobilenet_v2").lr == 0.0025  # RDED's rate for it
    assert recipe_for(cfg, "convnet-tiny") is cfg
    run = {
        "data": {"source": "digits", "image_size": 8},
        "squeeze": {"arch": "convnet-tiny", "epochs": 1},
        "distill": {"ipc": 1},
        "evaluate": {
            "epochs": 1,
            "seeds": 1,
            "students": ["convnet-tiny", "convnet"],
            "recipes": {"convnet": {"epochs": 2}},
            "reference_top1": {"convnet": 0.5},
        },
        "methods": ["random"],
        "device": "cpu",
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(run))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())["methods"]["random"]
    assert m["student"] == "convnet-tiny" and set(m["by_student"]) == {"convnet"}
    assert m["by_student"]["convnet"]["runs"][0]["epochs"] == 2  # its recipe
    md = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| random | convnet |"))
    top1 = m["by_student"]["convnet"]["top1"]
    assert f"| {top1 / 0.5:.3f} |" in row  # recovery against the given full-data accuracy


def test_method_score_as_dict_names_every_field():
    from geodistill.evaluate.student import MethodScore

    s = MethodScore(0.5, 0.01, 0.9, 0.02, 3, 12.5, runs=[{"seed": 0}])
    assert s.as_dict() == {
        "top1": 0.5,
        "top1_std": 0.01,
        "top5": 0.9,
        "top5_std": 0.02,
        "seeds": 3,
        "seconds": 12.5,
        "runs": [{"seed": 0}],
    }
    s.robust, s.flags = {"pgd100@8/255": 0.1}, ["x"]
    assert s.as_dict()["robust"] == {"pgd100@8/255": 0.1} and s.as_dict()["flags"] == ["x"]
