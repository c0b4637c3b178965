import torch
from torch import nn

from vision.data import ImageBatches, ImageSplit
from vision.train import accuracy


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
