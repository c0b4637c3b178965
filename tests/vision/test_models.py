import pytest
import torch

from core.capture import capture_attention
from core.lab.harness import to_plain
from vision.models import (
    ConvOperator, GlobalAttention, PixelHierarchy, PixelModelConfig, ResNet, ResNetConfig, WindowAttention,
    build_model, default_config, flops_per_image, window_merge, window_partition,
)

SMALL = dict(dims=(8, 16, 16), depths=(1, 1, 1), head_dim=8)


@pytest.mark.parametrize("name", ["attention", "cnn", "resnet"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 18, 20)])
def test_models_give_logits_and_train_every_parameter(name, shape):
    torch.manual_seed(0)
    config = default_config(name, *shape, num_classes=7)
    if name != "resnet":
        config.dims, config.depths = SMALL["dims"], SMALL["depths"]
        config.head_dim = SMALL["head_dim"]
    model = build_model(name, to_plain(config))
    images = torch.randn(2, *shape)
    logits = model(images)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "bias" not in n)


def test_only_the_spatial_operator_differs_between_attention_and_cnn():
    attention = PixelHierarchy(PixelModelConfig(operator="attention", **SMALL))
    cnn = PixelHierarchy(PixelModelConfig(operator="conv", **SMALL))
    shared = lambda model: {n: p.shape for n, p in model.named_parameters() if ".operator." not in n}
    assert shared(attention) == shared(cnn)
    assert any(isinstance(m, ConvOperator) for m in cnn.modules())
    assert not any(isinstance(m, ConvOperator) for m in attention.modules())


def test_attention_is_local_at_high_resolution_and_global_where_the_grid_is_small():
    model = PixelHierarchy(PixelModelConfig(**SMALL))  # 32x32: 1024 pixels, then 256, then 64
    kinds = [type(operator) for _, operator, _ in model.attention_layers()]
    assert kinds == [WindowAttention, GlobalAttention, GlobalAttention]


def test_conv_stages_and_global_tokens_reshape_only_the_attention_model():
    model = build_model("attention", to_plain(default_config("attention", 3, 32, 32, 10, conv_stages=1,
                                                             global_max_tokens=64)))
    operators = [type(block.operator) for stage in model.stages for block in stage]
    assert operators == [ConvOperator, WindowAttention, GlobalAttention, GlobalAttention]  # 32², 16², 8², 8²
    cnn = build_model("cnn", to_plain(default_config("cnn", 3, 32, 32, 10, conv_stages=1, global_max_tokens=64)))
    plain_cnn = build_model("cnn", to_plain(default_config("cnn", 3, 32, 32, 10)))
    assert {n: p.shape for n, p in cnn.named_parameters()} == {n: p.shape for n, p in plain_cnn.named_parameters()}
    # the conv stem's stage is the CNN's own: same parameter shapes there
    stem = {n: p.shape for n, p in model.named_parameters() if n.startswith("stages.0.")}
    assert stem == {n: p.shape for n, p in plain_cnn.named_parameters() if n.startswith("stages.0.")}
    for bad in (dict(conv_stages=3), dict(conv_stages=-1), dict(global_max_tokens=-1)):
        with pytest.raises(ValueError):
            default_config("attention", 3, 32, 32, 10, **bad)


def test_window_partition_round_trip():
    x = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).view(2, 96, 3)
    tiles = window_partition(x, 8, 12, 4)
    assert tiles.shape == (2 * 6, 16, 3)
    # Tile 1 of image 0 holds rows 0-3, columns 4-7.
    grid = x.view(2, 8, 12, 3)
    assert torch.equal(tiles[1].view(4, 4, 3), grid[0, 0:4, 4:8])
    assert torch.equal(window_merge(tiles, 2, 8, 12, 4), x)


def test_window_attention_stays_inside_its_tile_and_ignores_padding():
    torch.manual_seed(0)
    layer = WindowAttention(8, 2, height=6, width=7, window=4)  # padded to 8x8: 4 tiles
    x = torch.randn(1, 42, 8)
    out, weights = layer(x, return_weights=True)
    assert out.shape == (1, 42, 8)
    assert weights.shape == (4, 2, 16, 16)
    # Padded pixels (row 6-7 or column 7) are never attended to.
    real = torch.zeros(8, 8, dtype=torch.bool)
    real[:6, :7] = True
    keys_real = window_partition(real.view(1, 64, 1), 8, 8, 4).view(4, 1, 1, 16)
    assert (weights * ~keys_real).abs().max() == 0
    # Changing a pixel changes only the outputs of its own tile.
    changed = x.clone().view(1, 6, 7, 8)
    changed[0, 0, 0] += 1.0
    delta = (layer(changed.view(1, 42, 8)) - layer(x)).abs().sum(-1).view(6, 7)
    assert delta[:4, :4].sum() > 0
    assert delta[4:].sum() == 0 and delta[:, 4:].sum() == 0
    grid = layer.attention_map(weights, 5, 6)
    assert grid.shape == (6, 7)
    assert grid.sum() == pytest.approx(1.0, abs=1e-5)
    assert grid[:4].sum() == 0


def test_capture_sees_every_attention_layer_with_its_shape():
    model = PixelHierarchy(PixelModelConfig(**SMALL)).eval()
    with torch.no_grad(), capture_attention(model) as maps:
        model(torch.randn(2, 3, 32, 32))
    assert [m.weights.shape for m in maps] == [(2 * 64, 1, 16, 16), (2, 2, 256, 256), (2, 2, 64, 64)]
    for m in maps:
        assert torch.allclose(m.weights.sum(-1), torch.ones(()), atol=1e-5)


def test_relative_bias_option_adds_a_table_or_a_quadratic_encoding_per_layer():
    names = lambda model: {n.rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "position_bias" in n}
    count = lambda model: sum(1 for n, _ in model.named_parameters() if "position_bias" in n)
    table = PixelHierarchy(PixelModelConfig(relative_bias="table", **SMALL))
    quadratic = PixelHierarchy(PixelModelConfig(relative_bias="quadratic", **SMALL))
    assert names(table) == {"bias"} and count(table) == 3
    assert names(quadratic) == {"centre", "log_sharpness"} and count(quadratic) == 6
    assert not count(PixelHierarchy(PixelModelConfig(relative_bias="off", **SMALL)))
    # checkpoints written before the quadratic option hold a bool
    assert PixelModelConfig(relative_bias=True).relative_bias == "table"
    assert PixelModelConfig(relative_bias=False).relative_bias == "off"
    with pytest.raises(ValueError, match="relative_bias must be one of"):
        PixelModelConfig(relative_bias="rope")


def test_quadratic_bias_trains_through_the_model():
    torch.manual_seed(0)
    model = PixelHierarchy(PixelModelConfig(relative_bias="quadratic", **SMALL))
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "position_bias" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_flops_count_the_attention_scores():
    size = dict(image_height=16, image_width=16, global_max_tokens=64, **SMALL)
    small_window = PixelHierarchy(PixelModelConfig(window=2, **size))
    large_window = PixelHierarchy(PixelModelConfig(window=8, **size))
    # Same weight shapes, so any difference is the score and weighted-sum products.
    assert flops_per_image(large_window, (3, 16, 16)) > flops_per_image(small_window, (3, 16, 16)) > 0


def test_resnet_matches_the_page_layout():
    model = ResNet(ResNetConfig(width=64))
    assert sum(p.numel() for p in model.parameters()) == 6_573_120  # Page's ResNet-9 with 10 classes


def test_wrong_input_size_is_an_error():
    model = PixelHierarchy(PixelModelConfig(**SMALL))
    with pytest.raises(ValueError, match=r"built for \(3, 32, 32\)"):
        model(torch.randn(1, 3, 28, 28))
