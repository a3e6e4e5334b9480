"""``initstudy predict RUN IMAGES...``: class probabilities of a finished run's network for your images, as CSV.

IMAGES: one IDX image file (uint8, N x 28 x 28, as MNIST's ``t10k-images-idx3-ubyte``) or PNG files (28 x 28,
8-bit grayscale). The run is found, checked and loaded as for ``initstudy evaluate`` (:mod:`initstudy.trained`:
its numerics profile, device kind and precision), and images are scaled as in training (byte / 255) and passed
in the run's evaluation batches, so that MNIST's test file gives the logits of the run's test pass. One CSV row
per image: its name (the PNG's path, or the IDX file's index), the predicted class (the logits' argmax, as the
run's test pass records it) and the softmax probability of each class. Exit status 2 with one line for a run
that cannot be used or an image that is not one of these.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from initstudy import trained
from initstudy.core import signals
from initstudy.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

SIDE = 28
CLASSES = 10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ConfigError):
    """An input that is not a 28 x 28 grayscale image file; the message is one line."""


def is_png(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE


def read_png(path: Path) -> torch.Tensor:
    """A 28 x 28 8-bit grayscale PNG as 784 uint8 pixels (no conversion: another mode is refused, since any
    conversion would be a choice the training data never went through)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode, size, array = image.mode, image.size, np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise ImageError(f"{path} is not a readable PNG ({error})") from None
    if mode != "L" or size != (SIDE, SIDE):
        raise ImageError(
            f"{path} is a {size[0]}x{size[1]} {mode} image; predict takes 28x28 grayscale (mode L)"
        )
    return torch.from_numpy(array.reshape(SIDE * SIDE).copy())


def read_idx(path: Path) -> torch.Tensor:
    """An IDX image file (torchvision's reader) as N x 784 uint8 pixels."""
    from torchvision.datasets.mnist import read_image_file

    try:
        images = read_image_file(str(path))
    except (AssertionError, KeyError, TypeError, ValueError, RuntimeError, IndexError):
        images = None
    if images is None or tuple(images.shape[1:]) != (SIDE, SIDE):
        raise ImageError(f"{path} is not an IDX file of uint8 28x28 images (as t10k-images-idx3-ubyte)")
    return images.reshape(len(images), SIDE * SIDE)


def check_exist(paths: list[Path]) -> None:
    """Before the run is loaded (torch, the network): a missing file is refused at once."""
    for path in paths:
        if not path.is_file():
            raise ImageError(f"image file {path} does not exist")


def read_images(paths: list[Path]) -> tuple[list[str], torch.Tensor]:
    """Names and N x 784 uint8 pixels: one IDX file, or PNG files."""
    import torch

    pngs = [is_png(path) for path in paths]
    if all(pngs):
        return [str(path) for path in paths], torch.stack([read_png(path) for path in paths])
    if len(paths) == 1:
        pixels = read_idx(paths[0])
        return [str(index) for index in range(len(pixels))], pixels
    raise ImageError("give one IDX image file or PNG files only (got several files, not all PNG)")


def probabilities(run: trained.TrainedRun, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, softmax probabilities in float32) per image."""
    import torch

    logits = torch.cat(trained.logits_in_batches(run, pixels)).float()
    return logits.argmax(dim=1).cpu(), torch.softmax(logits, dim=1).cpu()


def write_csv(names: list[str], predicted: torch.Tensor, probs: torch.Tensor) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["image", "predicted", *(f"p{k}" for k in range(CLASSES))])
    for name, label, row in zip(names, predicted.tolist(), probs.tolist(), strict=True):
        writer.writerow([name, label, *(repr(float(p)) for p in row)])


@signals.entry_point("initstudy.predict")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="initstudy predict", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder, MLflow run id, or models:/<name>/<version>")
    parser.add_argument("images", nargs="+", type=Path, help="one IDX image file, or PNG files (28x28, gray)")
    parser.add_argument("--tracking-uri", help="MLflow store for a run id or model (default: the study's)")
    args = parser.parse_args(argv)
    try:
        check_exist(args.images)
        run = trained.open_run(args.run, args.tracking_uri, with_data=False)
        names, pixels = read_images(args.images)
        predicted, probs = probabilities(run, pixels)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    write_csv(names, predicted, probs)


if __name__ == "__main__":
    main()
