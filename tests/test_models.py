"""The CIFAR zoo against RepDistiller's outputs, plus the registry, checkpoint loading and adapter.

The reference fixtures (``fixtures/reference/models``, described in ``fixtures/reference/README.md``)
hold, per architecture, the state-dict keys with a checksum of each re-creatable weight, an
input batch, and the reference model's logits, ``is_feat`` / ``preact`` lists and SDD patch
scores.
"""
from __future__ import annotations

import json
import zlib
from functools import lru_cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import FIXTURES, make_weight
from kdlib.compat import import_torchvision
from kdlib.io import CheckpointError
from kdlib.models import FeatureAdapter, Features, create_model, list_models, load_weights

MODELS = FIXTURES / "models"
ARCHS = list(json.loads((MODELS / "index.json").read_text())["archs"])

#: Parameter counts with num_classes=100 (the table of the fixtures' README).
PARAMS = {
    "MobileNetV2": 812836, "ResNet101": 42697380, "ResNet152": 58341028, "ResNet18": 11220132,
    "ResNet34": 21328292, "ResNet50": 23705252, "ShuffleV1": 949258, "ShuffleV2": 1355528,
    "resnet110": 1736564, "resnet14": 181108, "resnet20": 278324, "resnet32": 472756,
    "resnet32x4": 7433860, "resnet44": 667188, "resnet56": 861620, "resnet8": 83892,
    "resnet8x4": 1233540, "vgg11": 9277284, "vgg13": 9462180, "vgg16": 14774436,
    "vgg19": 20086692, "vgg8": 3965028, "wrn_16_1": 180916, "wrn_16_2": 703284,
    "wrn_40_1": 569780, "wrn_40_2": 2255156,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this file on one intra-op thread: with batches of 2-4 images a second thread gains
    little, and on a shared 2-core machine it stalls whenever the other core is busy (5-10x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@lru_cache(maxsize=None)
def manifest(arch: str) -> dict:
    return json.loads((MODELS / f"{arch}.json").read_text())


def reference_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The fixture weights of ``arch``, re-created from their keys; each checked against its crc32."""
    weights = manifest(arch)["weights"]
    state = {}
    for key, shape, _, crc in weights["keys"]:
        w = make_weight(key, shape, weights["conv_gain"])
        assert zlib.crc32(w.tobytes()) & 0xFFFFFFFF == crc, f"re-created {key} differs from the fixture"
        state[key] = torch.from_numpy(w)
    return state


def patch_logits(fmap: torch.Tensor, classifier: nn.Linear, scales=(1, 2, 4)) -> torch.Tensor:
    """SDD's patch scores ``(B, K, N)``: the classifier on every cell of the pyramid of ``fmap``.

    Cells: average pools to 1x1, 2x2, 4x4, the global cell first, then row-major.
    """
    cells = torch.cat([F.adaptive_avg_pool2d(fmap, s).flatten(2) for s in scales], dim=2)
    return classifier(cells.transpose(1, 2)).transpose(1, 2)


def expected_shape(arch: str, entry) -> tuple[int, ...]:
    name = entry if isinstance(entry, str) else entry["array"]
    return tuple(manifest(arch)["arrays"][name]["shape"])


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_reference(arch):
    man = manifest(arch)
    model = create_model(arch, num_classes=man["num_classes"])
    state = reference_state_dict(arch)
    assert list(model.state_dict()) == list(state), "state-dict keys or their order differ"
    model.load_state_dict(state, strict=True)
    model.eval()
    with np.load(MODELS / f"{arch}.npz") as z:
        arrays = {k: z[k] for k in z.files}

    def check(actual: torch.Tensor, entry, what: str) -> None:
        entry = {"array": entry, "op": "identity"} if isinstance(entry, str) else entry
        ref = arrays[entry["array"]]
        if entry["op"] == "relu":
            ref = np.maximum(ref, 0)
        tol = man["arrays"][entry["array"]]
        np.testing.assert_allclose(actual.numpy(), ref, rtol=tol["rtol"], atol=tol["atol"],
                                   err_msg=f"{arch}: {what}")

    with torch.no_grad():
        check(model(torch.from_numpy(arrays["input"])), "logits", "logits")
        x = torch.from_numpy(arrays["input_feats"])
        for case, preact in (("feats", False), ("feats_preact", True)):
            outputs = man["cases"][case]["outputs"]
            feats = model.forward_features(x, preact=preact)
            assert len(feats.feats(preact)) == len(outputs["feats"])
            for i, (f, entry) in enumerate(zip(feats.feats(preact), outputs["feats"])):
                check(f, entry, f"{case}[{i}]")
            check(feats.logits, outputs["logits"], f"{case} logits")
        if "sdd_patch_score" in man["cases"]:
            outputs = man["cases"]["sdd_patch_score"]["outputs"]
            check(feats.final_map, outputs["final_map"], "final_map")
            check(patch_logits(feats.final_map, model.classifier), outputs["patch_score"], "sdd_patch_score")


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count(arch):
    with torch.device("meta"):
        model = create_model(arch)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[arch] == manifest(arch)["param_count"]


def test_list_models_is_the_zoo():
    assert sorted(list_models()) == sorted(PARAMS)
    assert list_models() == sorted(PARAMS, key=str.lower)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet9'.*resnet8.*ShuffleV2"):
        create_model("resnet9")


@pytest.mark.parametrize("arch", ARCHS)
def test_grayscale_input_and_num_classes(arch):
    """``in_channels=1`` (Fashion-MNIST at 32x32) gives the same maps as CIFAR; K=10 resizes the head."""
    model = create_model(arch, num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x, preact=True)
        logits = model(x)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 10
    assert logits.shape == feats.logits.shape == (2, 10)
    torch.testing.assert_close(logits, feats.logits)
    stage_entries = manifest(arch)["cases"]["feats"]["outputs"]["feats"][1:-1]
    assert [f.shape[1:] for f in feats.stages] == [expected_shape(arch, e)[1:] for e in stage_entries]
    assert [f.shape for f in feats.stages_preact] == [f.shape for f in feats.stages]
    assert feats.final_map.shape[-2:] == feats.stages[-1].shape[-2:]
    if arch.startswith("resnet"):
        assert feats.final_map.shape[-2:] == (8, 8)
    torch.testing.assert_close(feats.pooled, feats.final_map.mean(dim=(2, 3)))
    torch.testing.assert_close(feats.logits, model.classifier(feats.pooled))


def test_preact_is_computed_only_when_asked():
    feats = create_model("resnet8").forward_features(torch.randn(2, 3, 32, 32))
    assert feats.stages_preact is None
    with pytest.raises(ValueError, match="preact"):
        feats.feats(preact=True)


def test_wrn_preact_reapplies_the_next_batchnorm():
    """RepDistiller's quirk: in train mode ``preact=True`` updates the re-used BNs' statistics twice."""
    model = create_model("wrn_16_1").train()
    bn = model.block2.layer[0].bn1
    model.forward_features(torch.randn(4, 3, 32, 32))
    assert bn.num_batches_tracked.item() == 1
    model.forward_features(torch.randn(4, 3, 32, 32), preact=True)
    assert bn.num_batches_tracked.item() == 3


def test_mobilenetv2_classifier_is_a_linear_with_sequential_keys():
    model = create_model("MobileNetV2")
    assert isinstance(model.classifier, nn.Linear)
    keys = list(model.state_dict())
    assert keys[-2:] == ["classifier.0.weight", "classifier.0.bias"]
    other = create_model("MobileNetV2")
    other.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(other.classifier.weight, model.classifier.weight)


# ---------------------------------------------------------------- checkpoints


class NotATensor:
    """A pickled object that ``weights_only=True`` must refuse."""


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb)


@pytest.mark.parametrize("wrap", ["repdistiller", "sskd", "bare", "dataparallel"])
@pytest.mark.parametrize("from_file", [True, False])
def test_load_weights_community_formats(tmp_path, wrap, from_file):
    source = create_model("resnet8")
    state = source.state_dict()
    checkpoint = {
        "repdistiller": {"epoch": 240, "model": state, "best_acc": 72.5},
        "sskd": {"state_dict": state},
        "bare": state,
        "dataparallel": {"model": {f"module.{k}": v for k, v in state.items()}},
    }[wrap]
    if from_file:
        torch.save(checkpoint, tmp_path / "ckpt.pth")
        checkpoint = tmp_path / "ckpt.pth"
    target = create_model("resnet8")
    assert load_weights(target, checkpoint) is target
    _assert_same_weights(target, source)


def test_load_weights_sskd_mobilenetv2_classifier_key():
    source = create_model("MobileNetV2")
    state = {k.replace("classifier.0.", "classifier."): v for k, v in source.state_dict().items()}
    assert "classifier.weight" in state
    _assert_same_weights(load_weights(create_model("MobileNetV2"), {"state_dict": state}), source)


@pytest.mark.parametrize("arch", ["resnet8", "MobileNetV2"])
def test_load_weights_names_a_class_count_mismatch(arch):
    checkpoint = {"model": create_model(arch, num_classes=100).state_dict()}
    with pytest.raises(ValueError, match="checkpoint classifier has 100 classes but the model has 10"):
        load_weights(create_model(arch, num_classes=10), checkpoint)


def test_load_weights_lists_missing_and_unexpected_keys():
    with pytest.raises(ValueError, match=r"missing \(e\.g\. layer1\.1\.conv1\.weight"):
        load_weights(create_model("resnet14"), create_model("resnet8").state_dict())
    with pytest.raises(ValueError, match=r"unexpected \(e\.g\. layer1\.1\.conv1\.weight"):
        load_weights(create_model("resnet8"), create_model("resnet14").state_dict())


def test_load_weights_non_strict_loads_the_common_keys():
    source = create_model("resnet8")
    target = load_weights(create_model("resnet14"), source.state_dict(), strict=False)
    torch.testing.assert_close(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_load_weights_reports_shape_mismatches():
    message = r"shapes differ.*conv1\.weight: checkpoint \(16, 3, 3, 3\) vs model \(32, 3, 3, 3\)"
    with pytest.raises(ValueError, match=message):
        load_weights(create_model("resnet8x4"), create_model("resnet8").state_dict(), strict=False)


def test_load_weights_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": create_model("resnet8").state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_weights(create_model("resnet8"), path)


def test_load_weights_refuses_pickled_objects(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_weights(create_model("resnet8"), path)


def test_load_weights_bad_sources():
    with pytest.raises(ValueError, match="holds no state dict"):
        load_weights(create_model("resnet8"), {"epoch": 3})
    with pytest.raises(TypeError, match="path or a dict"):
        load_weights(create_model("resnet8"), 42)


# ---------------------------------------------------------------- adapter


class TinyNet(nn.Module):
    """A network outside the zoo: stem, two stages, pooling, head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean(dim=(2, 3)))


def test_adapter_collects_the_named_outputs():
    net = TinyNet()
    adapter = FeatureAdapter(net, stem="stem", stages=["body.0", "body.1"], classifier="head")
    x = torch.randn(2, 3, 16, 16)
    feats = adapter.forward_features(x)
    assert isinstance(feats, Features) and adapter.classifier is net.head
    torch.testing.assert_close(feats.stem, net.stem(x))
    torch.testing.assert_close(feats.stages[0], net.body[0](net.stem(x)))
    assert feats.final_map is feats.stages[1] and feats.final_map.shape == (2, 8, 4, 4)
    torch.testing.assert_close(feats.pooled, feats.final_map.mean(dim=(2, 3)))
    torch.testing.assert_close(feats.logits, net(x))
    torch.testing.assert_close(adapter(x), net(x))
    assert not net.stem._forward_hooks and not net.head._forward_pre_hooks


def test_adapter_preact_needs_paths():
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="stages_preact"):
        FeatureAdapter(TinyNet(), "stem", ["body.0", "body.1"], "head").forward_features(x, preact=True)
    adapter = FeatureAdapter(TinyNet(), "stem.1", ["body.0", "body.1"], "head",
                             stages_preact=["stem.0", "body.0"])
    feats = adapter.forward_features(x, preact=True)
    assert [f.shape[1] for f in feats.feats(preact=True)] == [4, 4, 8, 8]


def test_adapter_rejects_bad_paths():
    with pytest.raises(ValueError, match="no submodule 'layer9'.*children are: stem, body, head"):
        FeatureAdapter(TinyNet(), "stem", ["layer9"], "head")
    with pytest.raises(ValueError, match="not an nn.Linear"):
        FeatureAdapter(TinyNet(), "stem", ["body.0"], "body")


def test_adapter_on_torchvision_resnet18():
    try:
        torchvision = import_torchvision()
    except (ImportError, RuntimeError) as e:
        pytest.skip(f"torchvision unavailable: {e}")
    assert import_torchvision() is torchvision
    net = torchvision.models.resnet18(num_classes=10).eval()
    adapter = FeatureAdapter(net, stem="relu", stages=["layer1", "layer2", "layer3", "layer4"],
                             classifier="fc")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = adapter.forward_features(x)
        torch.testing.assert_close(feats.logits, net(x))
    assert [f.shape[1] for f in feats.stages] == [64, 128, 256, 512]
    assert feats.pooled.shape == (2, 512)
