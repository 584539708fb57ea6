"""Make the example's inputs the way a user already has them: Fashion-MNIST written out as a
PNG image folder, and a small CNN trained on it the usual way, saved as a state_dict.

    python examples/own_model/prepare.py --out outputs/own_model
    -> outputs/own_model/images/{train,test}/<class>/*.png and outputs/own_model/model.pt

Nothing here uses the framework: it is the user's side of the story.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: `examples.`
from examples.own_model.model import small_cnn

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "boot"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_pngs(out: Path, per_class: int, test_per_class: int) -> None:
    for split, stem, limit in (("train", "train", per_class), ("test", "t10k", test_per_class)):
        images = read_idx(FASHION / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION / f"{stem}-labels-idx1-ubyte.gz")
        for c, name in enumerate(CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == c)[:limit]:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


class Folder(Dataset):
    """The user's own loader: grayscale PNGs as [0, 1] tensors."""

    def __init__(self, root: Path) -> None:
        self.items = [(p, c) for c, name in enumerate(CLASSES)
                      for p in sorted((root / name).glob("*.png"))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        pixels = np.asarray(Image.open(path), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels)[None], label


def train(images: Path, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(Folder(images / "train"), batch_size=64, shuffle=True)
    for epoch in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}")
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/own_model"))
    ap.add_argument("--per-class", type=int, default=1000, help="training PNGs per class")
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    images = a.out / "images"
    write_pngs(images, a.per_class, a.test_per_class)
    model = train(images, a.epochs, a.seed)
    torch.save(model.state_dict(), a.out / "model.pt")  # weights only: what users share
    print(f"wrote {images} and {a.out / 'model.pt'}")


if __name__ == "__main__":
    main()
