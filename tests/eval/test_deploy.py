"""Exports that deploy: torch.export (.pt2), ONNX and safetensors + model card, each loaded in a fresh Python
process in which probclr cannot be imported, on real CIFAR-10 images, and compared with probclr's own outputs."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from clihelp import bad, ok

from probclr.config import DataConfig, load_config
from probclr.data.sources import load_splits
from probclr.eval.frozen_model import load_model
from probclr.model.forward import as_float_rgb
from probclr.train.pretrain import pretrain

# every module of this repository made unimportable: what runs below needs torch / onnxruntime / safetensors only
NO_PROBCLR = "import sys\nsys.modules.update({m: None for m in ('probclr', 'cli', 'analysis', 'studies')})\n"


@pytest.fixture(scope="module")
def new_loss_run(cifar_slice, tmp_path_factory):
    """A tiny --new-loss ConvNet run on real CIFAR-10 images, evaluated on validation, and 12 test images."""
    out = tmp_path_factory.mktemp("deploy") / "run"
    sets = ["model.backbone=convnet", "model.convnet_widths=[8, 16]", "optim.epochs=1", "optim.batch_size=100",
            "data.dataset=cifar10", f"data.data_dir={cifar_slice}", "optim.warmup_epochs=0", "data.train_limit=300",
            "model.proj_dim=16", "loss.name=mc_infonce", "loss.samples=2", "eval.probes=[knn]",
            "eval.fractions=[0.5, 1.0]", "eval.seeds=1"]
    pretrain(load_config(None, sets), out)
    ok(["evaluate", "--run", str(out), "--split", "val"])
    images = load_splits(DataConfig(dataset="cifar10", data_dir=str(cifar_slice), test_limit=12)).test.images
    return out, as_float_rgb(images)  # (12, 3, 32, 32) in [0, 1]


def _ours(run, x):
    model = load_model(run / "checkpoints" / "last.pt")
    with torch.no_grad():
        h, out = model(x)
    return h, torch.nn.functional.normalize(out.proj.float(), dim=1), out.kappa


def _in_fresh_process(tmp_path, x, script):
    """Run ``script`` (reading x.pt, writing out.pt) in a new interpreter where probclr cannot be imported."""
    torch.save(x, tmp_path / "x.pt")
    code = NO_PROBCLR + "import torch\nx = torch.load('x.pt')\n" + textwrap.dedent(script)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")


def test_torch_export_program_loads_with_torch_alone_at_any_batch(new_loss_run, tmp_path):
    run, x = new_loss_run
    f = tmp_path / "enc.pt2"
    ok(["export", "--run", str(run), "--out", str(f)])  # --format export is the default
    got = _in_fresh_process(tmp_path, x, """
        m = torch.export.load('enc.pt2').module()
        torch.save([m(x[:1]), m(x[:5]), m(x)], 'out.pt')
    """)
    h = _ours(run, x)[0]
    for part, n in zip(got, (1, 5, 12), strict=True):  # a dynamic batch dimension
        torch.testing.assert_close(part, h[:n], atol=1e-5, rtol=0)


def test_onnx_with_the_head_matches_probclr_on_real_images(new_loss_run, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (pip install -e '.[dev]')")
    run, x = new_loss_run
    f = tmp_path / "enc.onnx"
    ok(["export", "--run", str(run), "--format", "onnx", "--head", "--out", str(f)])
    got = _in_fresh_process(tmp_path, x, """
        import onnx, onnxruntime as ort
        assert onnx.load('enc.onnx').opset_import[0].version == 18
        s = ort.InferenceSession('enc.onnx', providers=['CPUExecutionProvider'])
        assert [o.name for o in s.get_outputs()] == ['h', 'mu', 'kappa'], s.get_outputs()
        runs = [s.run(None, {'images': x[:n].numpy()}) for n in (3, 12)]
        torch.save([[torch.from_numpy(a) for a in r] for r in runs], 'out.pt')
    """)
    h, mu, kappa = _ours(run, x)
    for outs, n in zip(got, (3, 12), strict=True):
        torch.testing.assert_close(outs[0], h[:n], atol=1e-4, rtol=0)
        torch.testing.assert_close(outs[1], mu[:n], atol=1e-4, rtol=0)
        torch.testing.assert_close(outs[2], kappa[:n], atol=0, rtol=1e-4)


def test_safetensors_with_its_card_rebuild_the_encoder_without_probclr(new_loss_run, tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is a test dependency (pip install -e '.[dev]')")
    run, x = new_loss_run
    f = tmp_path / "enc.safetensors"
    ok(["export", "--run", str(run), "--format", "safetensors", "--head", "--out", str(f)])
    got = _in_fresh_process(tmp_path, x, """
        import json
        from torch import nn
        from safetensors.torch import load_file
        card = json.load(open('enc.safetensors.model_card.json'))
        features = nn.Sequential(*[eval('nn.' + layer) for layer in card['architecture']['features']])
        weights = load_file('enc.safetensors')
        net = nn.Module()
        net.features = features
        net.load_state_dict({k: v for k, v in weights.items() if not k.startswith('head.')}, strict=True)
        net.eval()
        mean = torch.tensor(card['input']['mean']).view(1, 3, 1, 1)
        std = torch.tensor(card['input']['std']).view(1, 3, 1, 1)
        with torch.no_grad():
            h = net.features((x - mean) / std).mean(dim=(2, 3))
        torch.save([h, sorted(k for k in weights if k.startswith('head.'))], 'out.pt')
    """)
    torch.testing.assert_close(got[0], _ours(run, x)[0], atol=1e-5, rtol=0)
    assert got[1] and all(k.startswith("head.") for k in got[1])
    card = json.loads((tmp_path / "enc.safetensors.model_card.json").read_text())
    val = json.loads((run / "eval" / "last" / "val" / "results.json").read_text())["summary"]
    expect = {f"knn @ {100 * r['fraction']:g} % labels": round(r["accuracy_mean"], 4) for r in val}
    assert card["validation_accuracy"] == expect and len(expect) == 2
    assert card["input"]["shape"] == ["B", 3, 32, 32] and card["head"]["kappa"]["range"] == [1.0, 1.0e4]
    assert card["git_sha"] and card["probclr_version"] and card["training"]["config"]["loss"]["name"] == "mc_infonce"
    assert "kappa in [1.0, 10000.0]" in (tmp_path / "enc.safetensors.model_card.md").read_text()


def test_export_bad_input_is_one_line_and_writes_nothing(new_loss_run, tmp_path, monkeypatch):
    run, _ = new_loss_run
    target = tmp_path / "x"
    bad(["export", "--run", str(run), "--format", "torchscript", "--head", "--out", str(target)],
        "--head needs --format export | onnx | safetensors")
    bad(["export", "--run", str(run), "--image-size", "0", "--out", str(target)], "--image-size must be")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("onnxscript", "safetensors")
                        else real(name, *a))
    lines = bad(["export", "--run", str(run), "--format", "onnx", "--out", str(target)], "pip install 'probclr[onnx]'")
    assert len(lines) == 1 and "onnxscript" in lines[0]
    bad(["export", "--run", str(run), "--format", "safetensors", "--out", str(target)], "probclr[safetensors]")
    assert not target.exists() and not list(tmp_path.glob("x.*"))
