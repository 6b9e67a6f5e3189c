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


def test_compiled_students_train_like_eager_ones(teacher, digits, rt, monkeypatch):
    # --compile: the same student (same seed, same batches) up to float rounding of the kernels
    from dataclasses import replace

    from geodistill.evaluate.student import train_student

    ds = select_random(digits, 3, seed=0)
    cfg = EvalConfig(epochs=20, batch_size=15, lr=0.01)
    eager, _ = train_student(ds, teacher.model, digits, cfg, rt, seed=0)
    real, compiled_models = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda m: compiled_models.append(m) or real(m))
    compiled, _ = train_student(ds, teacher.model, digits, cfg, replace(rt, compile=True), seed=0)
    assert compiled_models[0] is compiled and compiled_models[1] is teacher.model
    x = digits.float(digits.x_test[:64])
    torch.testing.assert_close(compiled(x), eager(x), atol=2e-3, rtol=2e-3)
    assert not any(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in compiled.modules())


def test_amp_trains_students_in_bfloat16_on_cpu_and_they_still_learn(teacher, digits):
    # --amp on CPU: the forward passes of student training run under bfloat16 autocast
    from geodistill.evaluate.student import train_student
    from geodistill.runtime import make_runtime

    rt = make_runtime("cpu", amp=True)
    ds = select_random(digits, 5, seed=0)
    cfg = EvalConfig(epochs=60, batch_size=25, lr=0.01)
    dtypes = set()
    hook = teacher.model.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    try:
        _, bf16 = train_student(ds, teacher.model, digits, cfg, rt, seed=0)
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}  # the teacher's soft labels came from bfloat16 passes
    _, fp32 = train_student(ds, teacher.model, digits, cfg, make_runtime("cpu"), seed=0)
    assert bf16["top1"] > 0.4 and abs(bf16["top1"] - fp32["top1"]) < 0.1


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


def test_scores_are_mean_and_sample_std_over_the_configured_seeds(teacher, digits, rt, monkeypatch):
    import statistics

    import geodistill.evaluate.student as st

    top1 = {3: 0.5, 4: 0.7, 5: 0.9}
    robust = {3: {"clean": 0.5, "pgd100@2/255": 0.2}, 4: {"clean": 0.7, "pgd100@2/255": 0.8}, 5: None}
    trained = []

    def fake_train(ds, teacher, data, cfg, rt, seed, arch=None, log=None):
        trained.append(seed)
        return None, {"seed": seed, "top1": top1[seed], "top5": top1[seed] + 0.05, "seconds": 0.0}

    monkeypatch.setattr(st, "train_student", fake_train)
    monkeypatch.setattr(
        st,
        "attack_scores",
        lambda model, data, cfg, rt, log=None, only=None: (
            robust[trained[-1]] or {"clean": 0.9, "pgd100@2/255": 0.5}
        ),
    )
    ds = select_random(digits, 1, seed=0)
    old = [{"seed": 3, "top1": 0.5, "top5": 0.55, "seconds": 0.0, "robust": robust[3]},
           {"seed": 6, "top1": 0.0, "top5": 0.0, "seconds": 0.0, "robust": robust[3]},
           {"seed": 9, "top1": 0.0, "top5": 0.0, "seconds": 0.0, "robust": robust[3]}]  # fmt: skip
    cfg = EvalConfig(seed=3, seeds=3, attacks=["pgd100"])
    score = st.evaluate_distilled(ds, teacher.model, digits, cfg, rt, completed=old)
    assert trained == [4, 5]  # seed 3 resumed; seeds 6 and 9 are outside 3..5 and ignored
    assert [r["seed"] for r in score.runs] == [3, 4, 5] and score.seeds == 3
    assert score.top1 == pytest.approx(0.7) and score.top1_std == pytest.approx(
        statistics.stdev([0.5, 0.7, 0.9])
    )
    assert score.top5 == pytest.approx(0.75) and score.top5_std == pytest.approx(0.2)
    assert score.robust == pytest.approx({"clean": 0.7, "pgd100@2/255": 0.5})
    assert score.flags == [
        "student seed 4: pgd100@2/255 accuracy 0.8000 exceeds clean accuracy 0.7000: probable attack failure"
    ]
    one = st.evaluate_distilled(ds, teacher.model, digits, EvalConfig(seed=4, seeds=1), rt)
    assert one.top1 == 0.7 and one.top1_std == 0.0 and one.top5_std == 0.0


def test_attacks_run_on_the_seeded_subset_of_the_scored_split(teacher, digits, rt, monkeypatch):
    import geodistill.evaluate.student as st

    seen = {}

    def fake_robust(model, x, y, attacks, eps, runtime, *, num_classes, seed, log=None, only=None):
        seen.update(model=model, rt=runtime, x=x, y=y, attacks=attacks, eps=eps, k=num_classes, seed=seed)
        seen.update(only=only)
        return {"clean": 1.0}

    monkeypatch.setattr(st, "robust_accuracy", fake_robust)
    cfg = EvalConfig(attacks=["mim"], eps=[1 / 255], attack_samples=7, seed=2, split="test")
    st.attack_scores(teacher.model, digits, cfg, rt, only={"mim@1/255"})
    assert seen["only"] == {"mim@1/255"}
    from geodistill.evaluate.robust import fixed_subset

    idx = fixed_subset(len(digits.y_test), 7, 2)
    assert torch.equal(seen["x"], digits.float(digits.x_test[idx])) and torch.equal(
        seen["y"], digits.y_test[idx]
    )
    assert (seen["attacks"], seen["eps"], seen["k"], seen["seed"]) == (["mim"], [1 / 255], 10, 2)
    assert seen["model"] is teacher.model and seen["rt"] is rt


def test_students_inherit_the_data_spec_and_only_same_arch_extras():
    from geodistill.evaluate.student import make_student
    from geodistill.models import create_model

    t = create_model(
        "convnet", num_classes=4, in_chans=1, image_size=8, mean=[0.2], std=[0.3], width=8, seed=0
    )
    same = make_student(t, "convnet", EvalConfig(), seed=1)
    assert same.spec == t.spec  # width 8 kept for the same architecture
    a, b = make_student(t, "convnet", EvalConfig(), seed=1), make_student(t, "convnet", EvalConfig(), seed=2)
    assert torch.equal(same.head.weight, a.head.weight) and not torch.equal(a.head.weight, b.head.weight)
    other = make_student(t, "convnet-tiny", EvalConfig(arch_kwargs={"norm": "none"}), seed=1)
    assert other.spec == {
        "name": "convnet-tiny", "num_classes": 4, "in_chans": 1, "image_size": 8,
        "mean": [0.2], "std": [0.3], "norm": "none",
    }  # fmt: skip
    assert other(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def test_batches_are_a_fresh_permutation_every_epoch_in_near_equal_parts():
    from geodistill.evaluate.student import _batches

    g = torch.Generator().manual_seed(0)
    out = list(_batches(10, 3, 2, g))
    assert [len(b) for b in out] == [4, 3, 3, 4, 3, 3]
    assert sorted(torch.cat(out[:3]).tolist()) == list(range(10)) == sorted(torch.cat(out[3:]).tolist())
    g = torch.Generator().manual_seed(0)
    assert torch.equal(torch.cat(out[:3]), torch.randperm(10, generator=g))
    assert torch.equal(torch.cat(out[3:]), torch.randperm(10, generator=g))  # drawn anew


def test_student_loop_plumbing_memory_check_cutmix_timing_and_callbacks(teacher, digits, rt, monkeypatch):
    import time

    import geodistill.evaluate.student as st
    from geodistill.data import cutmix

    checks, mixes, attacked, seen = [], [], [], []
    monkeypatch.setattr(st, "check_batch_fits", lambda *a, **kw: checks.append((a, kw)) or 0)
    monkeypatch.setattr(st, "cutmix", lambda x, **kw: mixes.append((len(x), kw["alpha"])) or cutmix(x, **kw))
    monkeypatch.setattr(
        st,
        "attack_scores",
        lambda m, d, c, r, log=None, only=None: attacked.append((m, d, c, r)) or dict.fromkeys(only, 1.0),
    )
    ds = select_random(digits, 1, seed=0)  # 10 images
    cfg = EvalConfig(epochs=1, seeds=2, batch_size=9, views=3, cutmix=0.7, attacks=["mim"], max_memory="3GB")
    t0 = time.perf_counter()
    score = st.evaluate_distilled(ds, teacher.model, digits, cfg, rt, on_student=lambda m, r: seen.append(m))
    wall = time.perf_counter() - t0
    assert checks == [
        (
            (teacher.model, digits.image_shape, 27, rt.device, "3GB"),
            dict(what="student training", hint="lower evaluate.batch_size or evaluate.views", models=2),
        ),
    ]  # fmt: skip  (9 images x 3 views per step)
    # ceil(10 / 9) = 2 batches of 5 images, 3 views of each, per seed, all mixed
    assert mixes == [(15, 0.7), (15, 0.7)] * 2
    assert [(r["steps"], r["views"], r["batch_size"]) for r in score.runs] == [(2, 3, 9)] * 2
    assert len(seen) == 2 and all(isinstance(m, torch.nn.Module) and not m.training for m in seen)
    assert [a[0] for a in attacked] == seen and all(a[1:] == (digits, cfg, rt) for a in attacked)
    assert 0 < score.seconds <= wall and all(0 < r["seconds"] <= score.seconds for r in score.runs)
    assert score.top1_std == pytest.approx(abs(score.runs[0]["top1"] - score.runs[1]["top1"]) / 2**0.5)
    mixes.clear()
    two = DistilledSet(ds.images[:2], ds.labels[:2], ds.weights[:2], ds.class_names)
    st.train_student(two, teacher.model, digits, EvalConfig(epochs=2, batch_size=5, cutmix=1.0), rt, seed=0)
    assert mixes == [(2, 1.0), (2, 1.0)]  # two images are enough to mix
    st.train_student(
        DistilledSet(ds.images[:1], ds.labels[:1], ds.weights[:1], ds.class_names),
        teacher.model, digits, EvalConfig(epochs=2, batch_size=5, cutmix=1.0), rt, seed=0,
    )  # fmt: skip
    assert mixes == [(2, 1.0), (2, 1.0)]  # a single image is never mixed with itself


def test_resumed_scores_are_reused_only_for_the_same_dataset(teacher, digits, rt, tmp_path):
    import dataclasses

    from geodistill.pipeline import evaluate_resumable, teacher_entry

    ds = select_random(digits, 2, seed=0)
    cfg = EvalConfig(epochs=1, seeds=1, batch_size=20)
    other = dataclasses.replace(digits, name="other-digits")
    meta = {"sha256": "abc"}
    for data, reused in ((digits, False), (digits, True), (other, False)):
        logs: list[str] = []
        evaluate_resumable(ds, teacher.model, meta, data, cfg, rt, tmp_path, resume=True, log=logs.append)
        assert any("resuming" in s for s in logs) == reused, (data.name, logs)
        logs = []
        teacher_entry(teacher.model, meta, data, cfg, rt, tmp_path / "t.json", resume=True, log=logs.append)
        assert any("resuming" in s for s in logs) == reused, (data.name, logs)


def test_a_resumed_evaluation_runs_only_the_missing_attacks_on_saved_students(
    teacher, digits, rt, tmp_path, monkeypatch
):
    import geodistill.evaluate.robust as rob
    import geodistill.evaluate.student as st
    from geodistill.files import read_json
    from geodistill.pipeline import evaluate_resumable, teacher_entry

    trained, attacked, teacher_attacked = [], [], []
    real_train, real_build = st.train_student, rob.build_attack

    def train(*a, **kw):
        model, run = real_train(*a, **kw)
        trained.append((run["seed"], {k: v.clone() for k, v in model.state_dict().items()}))
        return model, run

    def build(name, model, eps, k, seed):
        (teacher_attacked if model is teacher.model else attacked).append((name, round(eps * 255), model))
        return real_build(name, model, eps, k, seed)

    monkeypatch.setattr(st, "train_student", train)
    monkeypatch.setattr(rob, "build_attack", build)
    ds = select_random(digits, 2, seed=0)
    meta = {"sha256": "abc"}

    def evaluate(**over):
        trained.clear(), attacked.clear(), teacher_attacked.clear()
        fields = dict(epochs=1, seeds=2, batch_size=20, attacks=["mim"], eps=[2 / 255], attack_samples=30)
        cfg = EvalConfig(**{**fields, **over})
        score = evaluate_resumable(ds, teacher.model, meta, digits, cfg, rt, tmp_path, resume=True)
        t = teacher_entry(teacher.model, meta, digits, cfg, rt, tmp_path / "t.json", resume=True)
        return score, t

    first, t1 = evaluate()
    assert [s for s, _ in trained] == [0, 1] and [a[:2] for a in attacked] == [("mim", 2)] * 2
    weights = {s: sd for s, sd in trained}
    # an added attack: no student is trained again, only pgd100 runs, on the saved students' weights
    second, t2 = evaluate(attacks=["mim", "pgd100"])
    assert trained == [] and [a[:2] for a in attacked] == [("pgd100", 2)] * 2
    for (_, _, model), seed in zip(attacked, (0, 1), strict=True):
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, weights[seed][k])
    assert [list(r["robust"]) for r in second.runs] == [["clean", "mim@2/255", "pgd100@2/255"]] * 2
    assert [r["robust"]["mim@2/255"] for r in second.runs] == [r["robust"]["mim@2/255"] for r in first.runs]
    assert [r["top1"] for r in second.runs] == [r["top1"] for r in first.runs]
    assert [a[:2] for a in teacher_attacked] == [("pgd100", 2)] and t2["robust"]["mim@2/255"] == t1["robust"][
        "mim@2/255"
    ]
    # fewer attacks: nothing runs; the report holds what is asked, the files keep every score
    third, t3 = evaluate(attacks=["pgd100"])
    assert trained == attacked == teacher_attacked == []
    assert [list(r["robust"]) for r in third.runs] == [["clean", "pgd100@2/255"]] * 2 and list(
        t3["robust"]
    ) == ["clean", "pgd100@2/255"]
    assert all("mim@2/255" in r["robust"] for r in read_json(tmp_path / "students.json")["runs"])
    assert "mim@2/255" in read_json(tmp_path / "t.json")["entry"]["robust"]
    # a student whose weights are gone is trained again; a new radius runs on the other one's weights
    (tmp_path / "student_seed1.safetensors").unlink()
    evaluate(eps=[1 / 255])
    assert [s for s, _ in trained] == [1] and [a[:2] for a in attacked] == [("mim", 1)] * 2
    # other attacked images: every attack runs again, no training; other epochs: every student trains
    evaluate(eps=[1 / 255], attack_samples=20)
    assert trained == [] and [a[:2] for a in attacked] == [("mim", 1)] * 2 and len(teacher_attacked) == 1
    evaluate(eps=[1 / 255], attack_samples=20, epochs=2)
    assert [s for s, _ in trained] == [0, 1]


def test_teacher_scores_are_shared_across_output_folders_only_for_the_same_pixels_and_code(
    teacher, digits, rt, tmp_path, monkeypatch
):
    import dataclasses

    import geodistill.evaluate.robust as rob
    import geodistill.pipeline as pl
    from geodistill.files import read_json

    attacked: list[str] = []
    real_build = rob.build_attack

    def build(name, model, eps, k, seed):
        attacked.append(name)
        return real_build(name, model, eps, k, seed)

    monkeypatch.setattr(rob, "build_attack", build)
    shared = tmp_path / "shared"
    meta = {"sha256": "f" * 64}
    cfg = EvalConfig(attacks=["mim"], eps=[2 / 255], attack_samples=30)

    def entry(folder, data=digits, cfg=cfg, meta=meta, resume=True, shared=shared):
        attacked.clear()
        logs: list[str] = []
        t = pl.teacher_entry(
            teacher.model, meta, data, cfg, rt, tmp_path / folder / "t.json", resume=resume, shared=shared,
            log=logs.append,
        )  # fmt: skip
        return t, logs

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, _ = entry("a")
    assert attacked == ["mim"] and len(list(shared.glob("ffffffffffffffff-*.json"))) == 1
    # another folder: the shared row is reused, said so, and copied into that folder
    second, logs = entry("b")
    assert attacked == [] and second == first and any("shared" in s for s in logs), logs
    assert read_json(tmp_path / "b" / "t.json")["entry"]["robust"] == first["robust"]
    # an added attack runs alone on top of the shared row, and the shared row keeps both
    (tmp_path / "c").mkdir()
    third, _ = entry("c", cfg=dataclasses.replace(cfg, attacks=["mim", "pgd100"]))
    assert attacked == ["pgd100"] and third["robust"]["mim@2/255"] == first["robust"]["mim@2/255"]
    (tmp_path / "d").mkdir()
    entry("d", cfg=dataclasses.replace(cfg, attacks=["pgd100"]))
    assert attacked == []
    # not reused: without --resume; for other pixels under the same name and sizes; for another
    # version of the code; a teacher without a hash is never written to the shared folder
    for folder, kw in [
        ("e", {"resume": False}),
        ("f", {"data": dataclasses.replace(digits, x_test=digits.x_test.flip(-1))}),
    ]:
        (tmp_path / folder).mkdir()
        assert entry(folder, **kw)[0] and attacked == ["mim"], folder
    real_versions = pl.versions
    monkeypatch.setattr(pl, "versions", lambda: real_versions() | {"geodistill": "0.0.0-other"})
    (tmp_path / "g").mkdir()
    entry("g")
    assert attacked == ["mim"]
    monkeypatch.setattr(pl, "versions", real_versions)
    before = set(shared.iterdir())
    (tmp_path / "h").mkdir(), (tmp_path / "i").mkdir()
    entry("h", meta={}), entry("i", meta={})
    assert attacked == ["mim"] and set(shared.iterdir()) == before
    # no shared folder: nothing is shared; one that cannot be written: a warning, the folder's row kept
    (tmp_path / "j").mkdir(), (tmp_path / "k").mkdir(), (tmp_path / "a-file").write_text("")
    entry("j", shared=None)
    assert attacked == ["mim"]
    t, logs = entry("k", shared=tmp_path / "a-file")
    assert any("not shared" in s and "a-file" in s for s in logs), logs
    assert read_json(tmp_path / "k" / "t.json")["entry"]["robust"] == t["robust"]
