"""The batch loader: a split held whole on the training device, batches as index slices,
augmentation on whole batches."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch

from dwsearch.data.tensors import ImageTensors
from dwsearch.errors import DataError

__all__ = ["BatchLoader"]


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"dwsearch:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class BatchLoader:
    """Batches from a split held whole on ``device`` as uint8; each batch is an index slice.

    Yields (images float32 N×C×H×W, labels int64 N) on ``device``, images normalized as
    ``(x / 255 - mean) / std`` per channel. With the defaults this equals torchvision's
    ``Normalize((0.5,) * 3, (0.5,) * 3)(ToTensor()(img))``. Optional augmentation, drawn per
    sample and applied to the whole batch at once: a random crop back to H×W from the image
    padded by ``crop_padding`` pixels on every side (``pad_mode`` "zeros": black pixels as in
    torchvision's ``RandomCrop(size, padding=p)``; "reflect": mirrored edges), and a
    horizontal flip of each image with probability 1/2. Shuffling and augmentation depend only
    on (``seed``, epoch); call ``set_epoch`` before each epoch to change them.

    ``extra`` (optional): per-sample rows aligned with the split (N, ...), such as a teacher
    network's logits for distillation. It is moved to ``device`` once, like the images, and
    each batch then yields ``(images, labels, extra rows)``: the rows are gathered with the
    batch's own indices, so they follow the shuffle without any per-sample lookup.
    """

    def __init__(
        self,
        data: ImageTensors,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        crop_padding: int = 0,
        hflip: bool = False,
        drop_last: bool = False,
        channels_last: bool = False,
        pad_mode: str = "zeros",
        extra: torch.Tensor | None = None,
    ) -> None:
        c, h, w = data.image_shape
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size={batch_size!r}: must be a positive integer")
        if len(mean) != c or len(std) != c:
            raise DataError(
                f"mean/std: need {c} values each (one per channel), found {len(mean)}/{len(std)}"
            )
        values = [*mean, *std]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or (
            not all(math.isfinite(v) for v in values)
        ):
            raise DataError(f"mean/std: need finite numbers, found {tuple(mean)}/{tuple(std)}")
        if any(s == 0 for s in std):
            raise DataError(f"std={tuple(std)}: values must be non-zero")
        if not isinstance(crop_padding, int) or not 0 <= crop_padding < min(h, w):
            raise DataError(
                f"crop_padding={crop_padding!r}: must be an integer with 0 <= p < {min(h, w)} "
                f"(the image side in pixels)"
            )
        if pad_mode not in ("zeros", "reflect"):
            raise DataError(f"pad_mode={pad_mode!r}: allowed: zeros, reflect")
        if extra is not None and (not isinstance(extra, torch.Tensor) or extra.dim() < 1
                                  or extra.shape[0] != len(data)):
            found = tuple(extra.shape) if isinstance(extra, torch.Tensor) else type(extra).__name__
            raise DataError(f"extra: expected one row per sample ({len(data)}, ...), found "
                            f"{found}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise DataError(f"device={device!r}: not a torch device (cpu, cuda, cuda:N)") from err
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.crop_padding = crop_padding
        self.pad_mode = pad_mode
        self.hflip = hflip
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.classes = data.classes
        # Moved once: every batch afterwards is a gather on the device, no host transfer.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.extra = extra.to(self.device) if extra is not None else None
        std_t = torch.tensor(std, dtype=torch.float64)
        mean_t = torch.tensor(mean, dtype=torch.float64)
        # (x/255 - mean)/std == x * scale + shift, computed in one addcmul per batch.
        self._scale = (1.0 / (255.0 * std_t)).float().view(1, c, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).float().view(1, c, 1, 1).to(self.device)

    @property
    def num_samples(self) -> int:
        """Number of samples in the split (including any a ``drop_last`` batch leaves out)."""
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffling and augmentation draws the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _crop_flip(
        self,
        idx: torch.Tensor,
        dy: torch.Tensor | None,
        dx: torch.Tensor | None,
        flip: torch.Tensor | None,
    ) -> torch.Tensor:
        """Gather crops and flips of images ``idx`` in one indexing op (uint8 in, uint8 out)."""
        _, c, h, w = self.images.shape
        dev = self.device
        p = self.crop_padding
        rows = torch.arange(h, device=dev).expand(len(idx), h)
        cols = torch.arange(w, device=dev).expand(len(idx), w)
        if flip is not None:
            cols = torch.where(flip[:, None], (w - 1) - cols, cols)
        if dy is not None and dx is not None:
            rows = rows + (dy - p)[:, None]
            cols = cols + (dx - p)[:, None]
        valid: torch.Tensor | None = None
        if p and self.pad_mode == "reflect":
            rows = (h - 1) - ((h - 1) - rows.abs()).abs()
            cols = (w - 1) - ((w - 1) - cols.abs()).abs()
        elif p:
            row_ok = (rows >= 0) & (rows < h)
            col_ok = (cols >= 0) & (cols < w)
            valid = row_ok[:, None, :, None] & col_ok[:, None, None, :]
            rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        chan = torch.arange(c, device=dev)[None, :, None, None]
        out = self.images[
            idx[:, None, None, None], chan, rows[:, None, :, None], cols[:, None, None, :]
        ]
        if valid is not None:
            out = out * valid
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.num_samples
        gen = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        # Draws are per position in the epoch, made up front so batch size does not change them.
        dy = dx = flip = None
        if self.crop_padding:
            span = 2 * self.crop_padding + 1
            dy = torch.randint(0, span, (n,), generator=gen).to(self.device)
            dx = torch.randint(0, span, (n,), generator=gen).to(self.device)
        if self.hflip:
            flip = (torch.rand(n, generator=gen) < 0.5).to(self.device)
        order = order.to(self.device)
        stop = len(self) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            sl = slice(start, min(start + self.batch_size, n))
            idx = order[sl]
            if dy is None and flip is None:
                raw = self.images[idx]
            else:
                raw = self._crop_flip(
                    idx,
                    None if dy is None else dy[sl],
                    None if dx is None else dx[sl],
                    None if flip is None else flip[sl],
                )
            x = torch.addcmul(self._shift, raw.float(), self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.extra is None:
                yield x, self.labels[idx]
            else:
                yield x, self.labels[idx], self.extra[idx]
