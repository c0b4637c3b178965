import copy

import pytest
import torch
from torch import nn

from vision.data import ImageBatches, ImageSplit
from vision.train import accuracy, choose_flip


class LeftHalf(nn.Module):
    """Class 0 when the left half of the image is brighter than the normalised mean, else class 1: a mirror
    image scores differently, so flip test-time augmentation changes the answers."""

    def forward(self, images):
        left = images[..., : images.shape[-1] // 2].mean(dim=(1, 2, 3))  # (B,)
        return torch.stack([left, -left], dim=1)  # (B, 2)


def test_flip_scores_the_mean_logits_of_the_image_and_its_mirror():
    images = torch.zeros(2, 1, 2, 4, dtype=torch.uint8)
    images[0, ..., :2] = 200  # left bright, right black; label 0
    images[1, ..., 2:] = 200  # left black, right bright; label 1
    labels = torch.tensor([0, 1])
    batches = ImageBatches(ImageSplit(images, labels, ["left", "right"]), 1, torch.tensor([0.5]),
                           torch.tensor([0.5]))
    # Normalised, 200 is +0.57 and 0 is -1. Alone, each image's left half decides correctly (1.0). With
    # its mirror, each image's score is (0.57 - 1) / 2 < 0 for class 0: image 0 turns wrong, image 1 stays
    # right (0.5).
    assert accuracy(LeftHalf(), batches, torch.device("cpu"))["accuracy"] == 1.0
    assert accuracy(LeftHalf(), batches, torch.device("cpu"), flip=True)["accuracy"] == 0.5


def halves(left: float, right: float, label: int = 0):
    """One batch of one 1×1×2 image whose left pixel is `left` and right pixel `right` (already normalised)."""
    return [(torch.tensor([[[[left, right]]]]), torch.tensor([label]))]


@pytest.mark.parametrize("val_prefers_flip", [False, True])
def test_validation_alone_chooses_flip_test_time_augmentation(val_prefers_flip):
    # LeftHalf: plain says class 0 when left > 0; with its mirror, when left + right > 0. Label 0 throughout.
    plain_right = halves(1.0, -3.0)  # plain right, flip wrong
    flip_right = halves(-1.0, 3.0)  # plain wrong, flip right
    val, test = (flip_right, plain_right) if val_prefers_flip else (plain_right, flip_right)
    device = torch.device("cpu")
    val_plain, test_plain = (accuracy(LeftHalf(), b, device)["accuracy"] for b in (val, test))
    got = choose_flip(LeftHalf(), val, test, device, val_plain, test_plain)
    # Test always prefers the other decoding, so a choice made on test would score 1.0 here.
    assert got == {"val_accuracy_flip": float(val_prefers_flip), "test_accuracy_flip": float(not val_prefers_flip),
                   "val_chose_flip": float(val_prefers_flip), "test_accuracy_chosen": 0.0}


def test_a_validation_tie_keeps_the_plain_decoding():
    both_right = halves(3.0, -1.0)
    test = halves(1.0, -3.0)  # plain right, flip wrong: the tie must not pick flip
    got = choose_flip(LeftHalf(), both_right, test, torch.device("cpu"), 1.0, 1.0)
    assert got["val_accuracy_flip"] == 1.0 and got["val_chose_flip"] == 0.0 and got["test_accuracy_chosen"] == 1.0


def test_each_attention_recipe_is_named_in_the_report_line():
    from core.lab.runner import ModelSpec
    from vision.models import default_config
    from vision.train import describe

    def line(**changes):
        return describe(ModelSpec("attention", "attention", default_config("attention", 1, 28, 28, 10, **changes)))

    assert line() == "pixel self-attention (4×4 windows, global on grids of at most 256 pixels)"
    assert line(relative_bias="quadratic").endswith("256 pixels, relative 2-D position bias: quadratic)")
    assert line(conv_stages=1).startswith("the first 1 stage(s) convolutional (a conv stem), attention above: ")
    assert describe(ModelSpec("cnn", "baseline", default_config("cnn", 1, 28, 28, 10))) == \
        "same hierarchy, 3×3 convolution as the operator"


@pytest.mark.parametrize("name", ["attention", "cnn", "resnet"])
def test_bf16_training_step_follows_fp32(name):
    """--precision bf16 changes the arithmetic of the forward pass, not the objective: the loss within 2% of
    float32's and the gradient pointing the same way, the loss itself in float32. Random
    non-zero biases, so a step that dropped or mis-cast them would not pass by their being zero."""
    from core.lab.harness import bf16_supported, to_plain
    from vision.models import build_model, default_config
    from vision.train import classification_step

    cpu = torch.device("cpu")
    step = {p: classification_step(cpu, 0.1, p) for p in ("fp32", "bf16")}
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g))
    if not bf16_supported(cpu):
        with pytest.raises(ValueError, match="no native bfloat16"):
            step["bf16"](nn.Linear(1, 1), batch)
        return
    torch.manual_seed(0)
    reference = build_model(name, to_plain(default_config(name, 3, 16, 16, 10)))
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=g))
    losses, grads = {}, {}
    for precision in ("fp32", "bf16"):
        model = copy.deepcopy(reference).train()
        loss = step[precision](model, batch)
        assert loss.dtype == torch.float32
        loss.backward()
        losses[precision] = loss.item()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    # The ResNet's max pools choose their maximum among bf16-rounded values, so some gradients take another
    # pixel's path, and its eight batch-normalised convolutions compound the rounding: ~0.97 measured (0.98
    # with average pools instead), where the two pixel hierarchies agree to 0.9999.
    floor = 0.95 if name == "resnet" else 0.999
    assert torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > floor
    # and bf16 did run: the two losses are not bit for bit the same
    assert losses["bf16"] != losses["fp32"]


def test_precision_and_resnet_width_flags(monkeypatch, tmp_path):
    from core.lab import harness
    from vision.__main__ import build_parser, main
    from vision.models import ResNet, default_config
    from vision.train import ROLE, compare_notes, describe, train_config_for
    from core.lab.runner import ModelSpec

    args = build_parser().parse_args(["compare"])
    assert args.precision == "fp32" and args.resnet_width == 16  # the recorded runs' arithmetic and width
    config = default_config("resnet", 3, 32, 32, 10, resnet_width=32)
    assert config.width == 32 and ResNet(config).head.in_features == 8 * 32
    with pytest.raises(ValueError, match="resnet_width"):
        default_config("resnet", 3, 32, 32, 10, resnet_width=0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--resnet-width", "0"])
    spec = ModelSpec("resnet", ROLE["resnet"], config, train=train_config_for("resnet", precision="bf16"))
    assert describe(spec).endswith("first layer 32 channels")

    class Data:
        shape, train, val, test = (3, 32, 32), [0] * 9, [0] * 2, [0] * 3

    notes = " ".join(compare_notes([spec], Data(), "held out"))
    assert "forward passes in bfloat16" in notes and "scored in float32" in notes
    # a device without native bfloat16: an explicit bf16 is refused at the door, before any data is read
    monkeypatch.setattr(harness, "bf16_supported", lambda device: False)
    with pytest.raises(SystemExit, match="no native bfloat16"):
        main(["compare", "--precision", "bf16", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])


def test_every_ablation_changes_its_own_fields_and_nothing_else():
    import dataclasses

    from vision.models import default_config
    from vision.train import ABLATIONS, ablation_specs, train_config_for
    base, cnn = default_config("attention", 3, 32, 32, 10), default_config("cnn", 3, 32, 32, 10)
    train = train_config_for("attention", epochs=3, fraction=0.2)
    specs, notes = ablation_specs(base, cnn, train, list(ABLATIONS))
    assert [s.name for s in specs] == ["attention", "cnn", *(f"attention {key}" for key in ABLATIONS)]
    assert specs[0].config == base and specs[1].config == cnn and all(s.train.fraction == 0.2 for s in specs)
    for spec, (key, (what, model_changes, train_changes)) in zip(specs[2:], ABLATIONS.items()):
        changed_model = {k for k, v in dataclasses.asdict(spec.config).items() if v != getattr(base, k)}
        changed_train = {k for k, v in dataclasses.asdict(spec.train).items() if v != getattr(train, k)}
        assert changed_model == set(model_changes) and changed_train == set(train_changes), key
        assert f"attention {key}: {what}" in notes

    # a variant the base already has is left out, and the notes say so
    quadratic = dataclasses.replace(base, relative_bias="quadratic")
    specs, notes = ablation_specs(quadratic, cnn, train, ["quadratic-bias", "lr-1e-3"])
    assert [s.name for s in specs] == ["attention", "cnn", "attention lr-1e-3"]
    assert any(n.startswith("attention quadratic-bias: left out") for n in notes)


def test_ablation_verdicts_against_the_sampling_error(monkeypatch):
    import vision.train as train_module
    from core.lab.experiment import ModelResult
    from core.lab.runner import ModelSpec
    from vision.models import default_config
    from vision.train import ablation_specs, ablation_summary, train_config_for

    base, cnn = default_config("attention", 3, 8, 8, 2), default_config("cnn", 3, 8, 8, 2)
    specs, _ = ablation_specs(base, cnn, train_config_for("attention"), ["lr-1e-3", "lr-4e-3", "wd-0.2"])
    accuracy = {"attention": 0.5, "cnn": 0.6, "attention lr-1e-3": 0.58, "attention lr-4e-3": 0.42,
                "attention wd-0.2": 0.55}
    results = [ModelResult(s.name, s.role, {"val_accuracy": accuracy[s.name]}, {}, [], 0, 0.0) for s in specs]
    monkeypatch.setattr(train_module, "ablation_speeds", lambda specs, *a, **k: {
        s.name: {"images_per_s": 100.0, "speed_vs_attention": 1.0, "timed_as": "attention"} for s in specs})
    notes, extra = ablation_summary({}, results, specs=specs, shape=(3, 8, 8), num_classes=2,
                                    device=torch.device("cpu"), val_images=400)
    noise = 100 * 2 * (2 * 0.25 / 400) ** 0.5  # 7.07 points
    assert extra["ablation_noise_points"] == pytest.approx(noise)
    verdicts = {row: entry["verdict"] for row, entry in extra["ablation"].items()}
    assert verdicts == {"attention": "reference", "cnn": "gain", "attention lr-1e-3": "gain",
                        "attention lr-4e-3": "loss", "attention wd-0.2": "within noise"}
    by_name = {r.model: r for r in results}
    assert by_name["attention lr-1e-3"].bookkeeping["val_vs_attention"] == pytest.approx(8.0)
    assert "timed_as" not in by_name["cnn"].bookkeeping  # bookkeeping holds numbers only
    assert any("attention lr-4e-3: validation -8.00 points against attention (loss)" in n for n in notes)


def test_model_kind_names_what_build_model_takes():
    from vision.models import ResNetConfig, build_model, default_config, model_kind
    for name in ("attention", "cnn", "resnet"):
        config = default_config(name, 3, 8, 8, 2)
        assert model_kind(config) == name
        assert type(build_model(model_kind(config), config)) is type(build_model(name, config))
    with pytest.raises(TypeError, match="not a vision model config"):
        model_kind({"width": 16})
    assert model_kind(ResNetConfig(width=8)) == "resnet"


def test_training_contenders_train_on_the_same_images_in_their_recipes_layout(monkeypatch):
    import vision.train as train_module
    from vision.models import default_config
    from vision.train import train_config_for, training_contender

    seen = {}

    def record(model, optimizer, step, batches, warmup, device):
        seen[type(model).__name__] = (list(batches), optimizer)
        return 1.0

    monkeypatch.setattr(train_module, "timed_steps", record)
    for name in ("attention", "resnet"):
        config = default_config(name, 3, 8, 8, 2)
        _, call = training_contender(config, train_config_for(name, batch_size=4), (3, 8, 8), 2, 3,
                                     torch.device("cpu"))
        assert call() == 1.0
    (pixel, adamw), (resnet, sgd) = seen["PixelHierarchy"], seen["ResNet"]
    assert len(pixel) == len(resnet) == 3  # ``steps`` steps per call, one fixed batch
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(sgd, torch.optim.SGD)  # each its own recipe
    assert torch.equal(pixel[0][0], resnet[0][0]) and torch.equal(pixel[0][1], resnet[0][1])
    assert resnet[0][0].is_contiguous(memory_format=torch.channels_last)  # the ResNet trains channels-last
    assert not pixel[0][0].is_contiguous(memory_format=torch.channels_last)
