"""Pretrained feature networks of the published generation metrics, and their weight files.

Nothing here downloads: the user names the weights file, and these networks are built with the
layout of the released checkpoints so that the file loads as it is.

- :func:`medicalnet_resnet50`: MONAI's 3D ``resnet50`` with MedicalNet's options (one input
  channel, 7^3 stem of stride 2, shortcut type B without bias, no classifier), the network MONAI
  itself builds for MedicalNet's ``resnet_50_23dataset`` weights; ``forward`` gives the global
  average of the last block, (N, 2048). The released file is ``{"state_dict": {"module.<key>":
  tensor}}``; the ``module.`` prefix (``nn.DataParallel``) and the wrapper are removed, a
  segmentation head (``conv_seg.*``) is ignored.
- :class:`RadImageNetResNet50`: the 2D ResNet-50 of RadImageNet's PyTorch port (converted from
  the Keras ``RadImageNet-ResNet50_notop`` model: a bias in every convolution, the stride in the
  first 1x1 convolution of a bottleneck, batch-norm eps 1.001e-5), the network MAISI's 2.5D FID
  runs; ``forward`` gives the spatial average of the last block, (N, 2048).
- :func:`load_pretrained`: read a ``.pth`` / ``.pt`` (``torch.load(weights_only=True)``) or
  ``.safetensors`` file into a new network; a file that is not a checkpoint, is truncated or holds
  another network's weights gets a one-line :class:`~lift3d.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import resnet50
from torch import nn

from lift3d.errors import InputError
from lift3d.models.weights import load_tensors, state_dict_mismatch

FEATURE_DIM = 2048  # ResNet-50's last block: the feature size of both networks
MEDICALNET_HEADS = ("conv_seg.", "fc.")  # heads a released checkpoint may carry; not features
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")  # dicts a checkpoint nests in


def medicalnet_resnet50() -> nn.Module:
    """MONAI's 3D ResNet-50 built as for MedicalNet's weights (randomly initialised).

    Returns:
        A ``monai.networks.nets.ResNet`` in eval mode: (N, 1, D, H, W) -> (N, 2048) features
        (global average of the last block).
    """
    net = resnet50(
        pretrained=False,
        spatial_dims=3,
        n_input_channels=1,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type="B",
        bias_downsample=False,
        feed_forward=False,
    )
    return net.eval()


class _KerasBottleneck(nn.Module):
    """Bottleneck of the Keras ResNet-50: stride in the first 1x1 convolution, biased convs."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=True)
        self.bn1 = nn.BatchNorm2d(planes, eps=1.001e-5)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes, eps=1.001e-5)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=True)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, eps=1.001e-5)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class RadImageNetResNet50(nn.Module):
    """RadImageNet's 2D ResNet-50 (PyTorch port of the Keras model; no classifier).

    Module names follow the released ``RadImageNet-ResNet50_notop.pth`` state dict (``conv1``,
    ``bn1``, ``layer1.0.conv1`` ... ``layer4.2.bn3``, ``layerN.0.downsample.0/1``).

    ``forward``: (N, 3, H, W) BGR slices, ImageNet means subtracted -> (N, 2048), the spatial
    average of the last block.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)
        self.eval()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        out_planes = planes * _KerasBottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=True),
                nn.BatchNorm2d(out_planes, eps=1.001e-5),
            )
        layers = [_KerasBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_planes
        layers += [_KerasBottleneck(out_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


# ------------------------------------------------------------------ weight files


def _one_line(exc: BaseException) -> str:
    """The exception's class and the first line of its message, shortened."""
    first = (str(exc).strip().splitlines() or [""])[0]
    first = first if len(first) <= 120 else first[:117] + "..."
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped: a ``.safetensors`` file, or a ``.pth`` / ``.pt``
    file read with ``torch.load(weights_only=True)``; a ``state_dict`` (or ``model``) wrapper is
    opened and a ``module.`` prefix on every key removed.

    Raises:
        InputError: the file is missing, unreadable, truncated or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    if path.name.endswith(".safetensors"):
        obj: Any = load_tensors(path)[0]
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # zip, pickle and weights-only errors of every kind
            raise InputError(
                f"not a readable PyTorch weights file, or a truncated one ({_one_line(exc)})", path
            ) from None
    for _ in range(2):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
    if not isinstance(obj, Mapping):
        raise InputError(f"weights file holds a {type(obj).__name__}, not a state dict", path)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError("weights file holds no tensors", path)
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_pretrained(
    build: Callable[[], nn.Module], path: str | Path, what: str, ignore: Sequence[str] = ()
) -> nn.Module:
    """Build a network and fill it from a released weights file; every weight of the network
    must be in the file. The file is read first, so an unreadable one fails at once.

    Args:
        build: makes the (randomly initialised) network, e.g. :func:`medicalnet_resnet50`.
        path: ``.pth`` / ``.pt`` / ``.safetensors`` file (:func:`read_checkpoint`).
        what: the network's name for messages, e.g. "MedicalNet ResNet-50".
        ignore: key prefixes of the file that are not part of the network (heads).

    Returns:
        The network in eval mode.

    Raises:
        InputError: an unreadable file, or keys or shapes that do not fit the network (the
        message names the first few).
    """
    tensors = {k: v for k, v in read_checkpoint(path).items() if not k.startswith(tuple(ignore))}
    net = build()
    expected = net.state_dict()
    # Checkpoints from before batch-norm counted its steps have no num_batches_tracked.
    problem = state_dict_mismatch(expected, tensors, optional=("num_batches_tracked",))
    if problem:
        raise InputError(f"not {what} weights: {problem}", path)
    net.load_state_dict(tensors, strict=False)
    return net.eval()
