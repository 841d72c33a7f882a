"""ResNets of four stages of width 64/128/256/512, global average pooling and a linear head
(He et al. 2016). ``stem="cifar"`` is the 3x3 stride-1 stem without max-pool that the
dataset-condensation literature uses on 32x32 images; ``stem="imagenet"`` is the original
7x7 stride-2 convolution plus 3x3 stride-2 max-pool, which the official DiM code also uses
for its MNIST and ImageNet pool networks (``resnet10_imagenet``, ``resnet18_imagenet``).

``downsample="stride"`` is the usual strided convolution; ``downsample="avgpool"`` is
ResNet-AP from IDC (Kim et al. 2022): every strided convolution becomes a stride-1
convolution followed by 2x2 average pooling, in the residual branch and the shortcut.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from gencond.errors import GencondError
from gencond.models.layers import ClassifierMixin, entry_kwargs, make_norm


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, downsample: str) -> nn.Module:
    """A convolution that halves the map either by stride or by a following average pool."""
    padding = kernel // 2
    if stride == 1 or downsample == "stride":
        return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=1, padding=padding, bias=False),
        nn.AvgPool2d(stride, stride),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, norm: str, downsample: str):
        super().__init__()
        self.conv1 = _conv(in_ch, planes, 3, stride, downsample)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.shortcut = _shortcut(in_ch, planes * self.expansion, stride, norm, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, norm: str, downsample: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv(planes, planes, 3, stride, downsample)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = make_norm(norm, planes * self.expansion)
        self.shortcut = _shortcut(in_ch, planes * self.expansion, stride, norm, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str, downsample: str) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(_conv(in_ch, out_ch, 1, stride, downsample), make_norm(norm, out_ch))


def _stem(kind: str, in_ch: int, width: int, norm: str) -> nn.Sequential:
    if kind == "cifar":
        return nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1, bias=False), make_norm(norm, width), nn.ReLU(inplace=True))
    if kind == "imagenet":
        return nn.Sequential(nn.Conv2d(in_ch, width, 7, stride=2, padding=3, bias=False), make_norm(norm, width),
                             nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
    raise GencondError(f"unknown ResNet stem {kind!r}; choose cifar or imagenet")


class ResNet(ClassifierMixin, nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks_per_stage: tuple[int, int, int, int],
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 32,
        width: int = 64,
        norm: str = "batch",
        downsample: str = "stride",
        stem: str = "cifar",
    ):
        super().__init__()
        del img_size  # global pooling makes the head independent of the input size
        self.stem = _stem(stem, in_chans, width, norm)
        stages, in_ch = [], width
        for i, n_blocks in enumerate(blocks_per_stage):
            planes = width * 2**i
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(block(in_ch, planes, stride, norm, downsample))
                in_ch = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.num_classes = num_classes
        self.num_features = in_ch
        self.head = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))


def _resnet(block, layout, pretrained, kwargs, **defaults) -> ResNet:
    return ResNet(block, layout, **{**defaults, **entry_kwargs(pretrained, kwargs)})


@register_model
def resnet10_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10 (one basic block per stage), batch norm."""
    return _resnet(BasicBlock, (1, 1, 1, 1), pretrained, kwargs)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18, batch norm."""
    return _resnet(BasicBlock, (2, 2, 2, 2), pretrained, kwargs)


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-34, batch norm."""
    return _resnet(BasicBlock, (3, 4, 6, 3), pretrained, kwargs)


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 (bottleneck blocks), batch norm."""
    return _resnet(Bottleneck, (3, 4, 6, 3), pretrained, kwargs)


@register_model
def resnet10_cifar_in(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10, instance norm."""
    return _resnet(BasicBlock, (1, 1, 1, 1), pretrained, kwargs, norm="instance")


@register_model
def resnet18_cifar_in(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18, instance norm (the DC/DSA/DM code's ``ResNet18``)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), pretrained, kwargs, norm="instance")


@register_model
def resnet34_cifar_in(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-34, instance norm."""
    return _resnet(BasicBlock, (3, 4, 6, 3), pretrained, kwargs, norm="instance")


@register_model
def resnet50_cifar_in(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50, instance norm."""
    return _resnet(Bottleneck, (3, 4, 6, 3), pretrained, kwargs, norm="instance")


@register_model
def resnet10_ap(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-AP-10 of IDC: average-pool downsampling, instance norm."""
    return _resnet(BasicBlock, (1, 1, 1, 1), pretrained, kwargs, norm="instance", downsample="avgpool")


@register_model
def resnet18_ap(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-AP-18: average-pool downsampling, instance norm."""
    return _resnet(BasicBlock, (2, 2, 2, 2), pretrained, kwargs, norm="instance", downsample="avgpool")


@register_model
def resnet10_imagenet(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10 with the ImageNet stem (input / 4), batch norm: the DiM code's pool ResNet-10."""
    return _resnet(BasicBlock, (1, 1, 1, 1), pretrained, kwargs, stem="imagenet")


@register_model
def resnet18_imagenet(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 with the ImageNet stem (input / 4), batch norm: the DiM code's pool ResNet-18."""
    return _resnet(BasicBlock, (2, 2, 2, 2), pretrained, kwargs, stem="imagenet")
