import pytest

from geodistill.config import RunConfig, load_yaml, resolve, save_config
from geodistill.files import GeodistillError


def test_yaml_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndistill: {ipc: 5, crop_scale: [0.2, 1.0]}\nsqueeze: {arch: convnet-tiny}\n")
    cfg = resolve(p, {"distill.ipc": "7", "evaluate.seeds": "2", "squeeze.reg_eps": "2/255"})
    assert cfg.distill.ipc == 7 and cfg.evaluate.seeds == 2 and cfg.squeeze.arch == "convnet-tiny"
    assert cfg.distill.crop_scale == (0.2, 1.0)
    assert cfg.squeeze.reg_eps == pytest.approx(2 / 255)
    save_config(cfg, tmp_path / "resolved.yaml")
    again = resolve(tmp_path / "resolved.yaml", {})
    assert again == cfg


def test_packaged_demo_preset():
    cfg = resolve("demo", {})
    assert isinstance(cfg, RunConfig) and cfg.data.source == "digits" and "wmdd" in cfg.methods


@pytest.mark.parametrize(
    "text,match",
    [
        ("distill: {ipcc: 3}", "unknown key"),
        ("distill: {ipc: lots}", "cannot read 'lots' as int"),
        ("distill: [1, 2]", "expected a mapping"),
        ("!!python/object/apply:os.system ['echo hacked']", "invalid YAML"),
        ("- just a list", "top level must be a mapping"),
    ],
)
def test_bad_configs(tmp_path, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(GeodistillError, match=match):
        resolve(p, {})


def test_missing_config_file(tmp_path):
    with pytest.raises(GeodistillError, match="no such config file or preset"):
        resolve(tmp_path / "nope.yaml", {})
    with pytest.raises(GeodistillError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_attack_radius_suffix_is_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("evaluate: {attacks: [pgd100, autoattack@2/255]}\n")
    assert resolve(p, {}).evaluate.attacks == ["pgd100", "autoattack@2/255"]
    for bad, match in (
        ("autoattack@8", "outside"),
        ("autoattack@x", "cannot read"),
        ("fgsm@2/255", "not one of"),
    ):
        p.write_text(f"evaluate: {{attacks: ['{bad}']}}\n")
        with pytest.raises(GeodistillError, match=match):
            resolve(p, {})


def test_saved_configs_match_with_new_default_fields():
    from geodistill.config import DistillConfig, config_matches, to_dict

    cfg = DistillConfig(ipc=3)
    saved = to_dict(cfg)
    saved.pop("feat_view")  # written before the field existed
    assert config_matches(saved, cfg)
    assert not config_matches({**saved, "ipc": 4}, cfg)
    assert not config_matches({**saved, "gone": 1}, cfg)
    assert not config_matches(None, cfg)
