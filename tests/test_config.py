from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probclr.config import Config, ConfigError, from_dict, load_config, merge, parse_override, to_dict

CONFIGS = sorted(p for p in (Path(__file__).resolve().parent.parent / "configs").rglob("*.yaml") if "sweeps" not in p.parts)
SWEEPS = sorted((Path(__file__).resolve().parent.parent / "configs" / "sweeps").rglob("*.yaml"))


def test_defaults_are_valid_and_round_trip():
    cfg = load_config()
    assert cfg == Config()
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("path", SWEEPS, ids=[str(p.relative_to(p.parents[1])) for p in SWEEPS])
def test_every_shipped_sweep_expands(path):
    from studies.sweep import expand, load_spec

    assert len(expand(load_spec(path))) >= 1


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"cifar10_resnet18.yaml", "cifar10_cpu.yaml", "stl10_resnet18.yaml", "digits_demo.yaml"} <= names


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=0.5", "augment.crop_scale=[0.2, 1.0]", "data.data_dir=/x y", "run.num_threads=3"])
    assert cfg.optim.lr == 0.5 and cfg.augment.crop_scale == (0.2, 1.0)
    assert cfg.data.data_dir == "/x y" and cfg.run.num_threads == 3
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # int accepted where a float is expected


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.lrr=0.1", "optim.lrr"),
        ("optimx.lr=0.1", "optimx"),
        ("optim.batch_size=abc", "optim.batch_size must be an integer"),
        ("optim.batch_size=2.5", "optim.batch_size must be an integer"),
        ("optim.batch_size=1", r"optim.batch_size must be in \[2, 1e\+07\] \(NT-Xent needs negatives\), got 1"),
        ("augment.flip=maybe", "augment.flip must be true or false"),
        ("augment.flip_p=1.5", "flip_p must be a probability"),
        ("loss.temperature=0", r"loss.temperature must be in \[0.0001, 100\], got 0"),
        ("model.backbone=vgg", "model.backbone must be one of"),
        ("augment.crop_scale=[0.5, 0.1]", "crop_scale"),
        ("eval.fractions=[0.0]", "eval.fractions"),
        ("nokey", "section.key=value"),
        ("lr=3", "section.key"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="optim.lerning_rate"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(min_value=1e-6, max_value=10, allow_nan=False), bs=st.integers(min_value=2, max_value=8192),
       t=st.floats(min_value=1e-3, max_value=10))
def test_valid_values_always_accepted(lr, bs, t):
    cfg = merge(Config(), {"optim.lr": lr, "optim.batch_size": bs, "loss.temperature": t})
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.loss.temperature) == (lr, bs, t)


@settings(max_examples=60, deadline=None)
@given(bs=st.one_of(st.integers(max_value=1), st.text(max_size=5), st.floats(allow_nan=True), st.booleans()))
def test_invalid_batch_sizes_always_rejected(bs):
    with pytest.raises(ConfigError, match="optim.batch_size"):
        merge(Config(), {"optim.batch_size": bs})


def test_parse_override_yaml_values():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a.b=x=y") == ("a.b", "x=y")


@pytest.mark.parametrize("override, key", [
    ("run.seed=100000000000000000000", "run.seed"), ("run.num_threads=100000000000", "run.num_threads"),
    ("optim.warmup_epochs=.inf", "optim.warmup_epochs"), ("model.proj_dim=1000000000", "model.proj_dim"),
    ("eval.batch_size=0", "eval.batch_size"), ("eval.mlp_hidden=-1", "eval.mlp_hidden"),
    ("eval.knn_temperature=1e-300", "eval.knn_temperature"), ("eval.weight_decays=[.inf]", "eval.weight_decays"),
    ("loss.temperature=.inf", "loss.temperature"), ("supervised.finetune_lr_scale=.nan", "supervised.finetune_lr_scale"),
    ("eval.max_iter=0", "eval.max_iter"), ("data.image_size=2", "data.image_size"), ("run.seed=1e20", "run.seed"),
])
def test_every_numeric_field_has_a_finite_range(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace(".", r"\.")):
        load_config(None, [override])


def test_hostile_yaml_is_refused_in_one_bounded_line(tmp_path):
    pairs = zip("abcdefgh", "bcdefghi", strict=True)
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in pairs)
    for text, match in ((laughs, "aliases"), ("x: " + "[" * 3000 + "]" * 3000, "nested too deeply"),
                        ("optim: {lr: 0.1}\n", None)):
        p = tmp_path / "c.yaml"
        p.write_text(text)
        if match is None:
            assert load_config(p).optim.lr == 0.1
            continue
        with pytest.raises(ConfigError, match=match) as err:
            load_config(p)
        assert len(str(err.value)) < 400 and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="aliases"):
        load_config(None, ["eval.fractions=&a [0.1]"] + ["eval.seeds=*a"])
    p.write_bytes(b"optim:\n  lr: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config("/dev/null")
    with pytest.raises(ConfigError) as err:
        load_config(None, ["optim.lr=" + "9" * 5000 + "x"])
    assert len(str(err.value)) < 300


def test_flags_name_their_field_by_selector():
    """A command-line flag names its config field in code (a selector), not a string; a selector that does
    not land on one field of one section is refused."""
    from probclr.config import ConfigError, field_key, flag_updates

    assert field_key(lambda c: c.optim.batch_size) == "optim.batch_size"
    assert flag_updates([(lambda c: c.run.seed, 3), (lambda c: c.data.dataset, None)]) == {"run.seed": 3}
    for bad in (lambda c: c.optim, lambda c: c.optim.nope, lambda c: c.nosection.x, lambda c: 3):
        with pytest.raises(ConfigError):
            field_key(bad)


def test_a_key_given_twice_is_an_error_naming_file_lines_and_key(tmp_path):
    for text, key, lines in [("optim:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n", "'lr'", "lines 2 and 4"),
                             ("optim:\n  lr: 0.1\noptim:\n  epochs: 2\n", "'optim'", "lines 1 and 3"),
                             ("a: {b: {c: 1, c: 2}}\n", "'c'", "lines 1 and 1")]:
        p = tmp_path / "dup.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(p)
        msg = str(err.value)
        assert str(p) in msg and key in msg and lines in msg and "given twice" in msg, msg
    with pytest.raises(ConfigError, match="--set optim.lr is given twice"):
        load_config(None, ["optim.lr=0.1", "optim.epochs=2", "optim.lr=0.2"])


def test_a_yaml_boolean_where_a_name_belongs_says_to_quote_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  dataset: no\n")
    with pytest.raises(ConfigError, match="data.dataset must be one of .* got False .*quote it"):
        load_config(p)


@pytest.mark.parametrize(("text", "near"), [("optim:\n  batch-size: 8\n", "did you mean batch_size?"),
                                            ("optim:\n  LR: 0.1\n", "did you mean lr?")])
def test_a_key_that_differs_by_case_or_dash_names_the_real_one(tmp_path, text, near):
    p = tmp_path / "k.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=near):
        load_config(p)
    with pytest.raises(ConfigError, match=near):
        load_config(None, [text.split()[1].rstrip(":").join(["optim.", "=1"])])
