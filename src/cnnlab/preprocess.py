"""Any image file -> the input a model expects: grey or colour, at the model's size.

Two ways, by what the model was trained on:
- `mnist_like`, for digit-style models (MNIST, Fashion-MNIST...): MNIST digits are white ink on black,
  size-normalised into a 20x20 box (aspect ratio kept, anti-aliased) and centred by their centre of mass in a
  28x28 field (LeCun et al.). A photo, scan or drawing differs in each of these: dark ink on light paper, paper
  texture and shadows, any size, anywhere in the frame; `mnist_like` undoes all that (at any field size: the box
  keeps MNIST's 20/28 share).
- `plain_input`, for everything else (photos, CIFAR-10, your own folders): the image as it is, upright by its
  EXIF orientation, in the model's colour mode, resized the way the training images were (`read_pixels`).

Untrusted files are safe to pass in: only five raster formats are decoded, the pixel count is checked from
the header before a pixel is decoded, animated files give their first frame only, and every failure is an
ImageError that says what was wrong.
"""

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF")  # no plugin that runs external programs (EPS) or is rarely fuzzed
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; decoding more is a denial of service, not a digit
WORKING_SIZE = 1024  # longest side kept after decoding: enough to find a digit, bounded in memory and time
BOX = 20  # MNIST's size-normalisation box inside the 28x28 field
MIN_CONTRAST = 0.15  # ink must stand this far out of the background (on a 0-1 scale) to be ink, not paper noise
NOISE_FLOOR = 0.25  # after normalising the ink to 1, fainter pixels are paper texture or shadow
SPECK_MASS = 0.002  # share of the ink at each edge of the bounding box that may be cut: dust, not digit
BACKGROUND_GRID = 32  # the background's shadows and vignetting are estimated on a grid this coarse
MIN_STROKE = 2.0  # thinnest stroke, in pixels of the 20x20 box; MNIST's pen strokes are about 2-3 px wide


DIGIT_SHAPE = (28, 28, 1)  # MNIST's


@dataclass
class Prepared:
    """An image as read (transparency composited, at most WORKING_SIZE) and the model input made from it."""

    original: np.ndarray  # (h, w) grey or (h, w, 3) colour, float32 in [0, 1], 1 is white
    input: np.ndarray  # (H, W, C) float32 in [0, 1]; MNIST-style (1 is ink) when made `mnist_like`


def prepare(source, preprocess=True, max_pixels=MAX_PIXELS, shape=DIGIT_SHAPE) -> Prepared:
    """Read `source` (a path, bytes or a binary file) and make the (H, W, C) model input of `shape` from it:
    MNIST-like when `preprocess` (grey models only), else the image as it is, resized."""
    height, width, channels = shape
    image = read_image(source, max_pixels, channels)
    if preprocess and channels == 1:
        return Prepared(image, mnist_like(image, (height, width)))
    return Prepared(image, plain_input(image, (height, width)))


def open_image(source, max_pixels=MAX_PIXELS, draft=(WORKING_SIZE, WORKING_SIZE)):
    """Open and decode an image (its first frame), upright by its EXIF orientation: a PIL image, or an ImageError
    that says what was wrong. `source` is a path, bytes or a binary file; `draft` lets JPEG decode at a smaller
    scale (1/2, 1/4, 1/8) when the image is at least that large."""
    name = f"{source}: " if isinstance(source, (str, os.PathLike)) else ""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                        formats=FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(f"{name}{width}x{height} is {width * height:,} pixels, more pixels than the "
                                 f"{max_pixels:,} accepted; downscale the image")
            if width < 1 or height < 1:
                raise ImageError(f"{name}the image is empty ({width}x{height} pixels)")
            if draft:
                img.draft(None, draft)  # JPEG decodes at 1/2, 1/4 or 1/8 scale: faster
            img.load()  # the first frame only: animated GIF, APNG and multi-page TIFF stop here
            return ImageOps.exif_transpose(img)  # phones record their orientation in EXIF
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{name}is a folder, not an image") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}not an image in a readable format ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as e:  # Pillow's own, lower, limit: its message gives the size
        raise ImageError(f"{name}more pixels than the {max_pixels:,} accepted ({e}); downscale the image") from None
    except MemoryError:
        raise ImageError(f"{name}not enough memory to decode the image; downscale it") from None
    except Exception as e:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error... on bad files
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ImageError(f"{name}cannot be decoded, the file is truncated or corrupt ({reason})") from None


def read_image(source, max_pixels=MAX_PIXELS, channels=1) -> np.ndarray:
    """Decode an image into grey (h, w) or, with `channels=3`, colour (h, w, 3) float32 in [0, 1], 1 = white,
    with transparency composited. Images larger than WORKING_SIZE are reduced (anti-aliased)."""
    img = open_image(source, max_pixels)
    try:
        return _grey(img) if channels == 1 else _colour(img)
    except ImageError as e:
        name = f"{source}: " if isinstance(source, (str, os.PathLike)) else ""
        raise ImageError(f"{name}{e}") from None


def read_pixels(source, size, channels, max_pixels=MAX_PIXELS) -> np.ndarray:
    """A dataset's image file as uint8 (H, W, C) pixels of `size` (H, W): decoded, upright, grey or colour, resized
    bilinearly (anti-aliased when shrinking) as Keras's image_dataset_from_directory resizes, without cropping."""
    height, width = size
    img = open_image(source, max_pixels, draft=(width, height))
    try:
        pixels = _grey(img, longest=None) if channels == 1 else _colour(img, longest=None)
    except ImageError as e:
        raise ImageError(f"{source}: {e}") from None
    return resize(pixels, size)


def resize(pixels, size) -> np.ndarray:
    """(h, w[, C]) pixels in [0, 1] (float) -> uint8 (H, W, C) of `size`, bilinear; never a copy when the size fits."""
    pixels = np.asarray(pixels, np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[:2] != tuple(size):
        planes = [Image.fromarray(np.ascontiguousarray(pixels[..., c]), "F").resize((size[1], size[0]),
                                                                                   Image.Resampling.BILINEAR)
                  for c in range(pixels.shape[-1])]
        pixels = np.stack([np.asarray(plane, np.float32) for plane in planes], axis=-1)
    return (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)


def is_grey_mode(img) -> bool:
    """Whether a (not yet decoded) image holds grey pixels only, by its mode (and palette)."""
    if img.mode in ("1", "L", "LA", "La", "I", "F") or img.mode.startswith("I;16"):
        return True
    if img.mode in ("P", "PA") and img.palette and img.palette.mode in ("RGB", "RGBA"):
        entries = np.frombuffer(img.palette.tobytes(), np.uint8)
        rgb = entries[:len(entries) - len(entries) % len(img.palette.mode)].reshape(-1, len(img.palette.mode))[:, :3]
        return bool((rgb == rgb[:, :1]).all())
    return False


def _colour(img, longest=WORKING_SIZE) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]; transparency laid on the background that contrasts with what is drawn."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return np.repeat(_grey(img, longest)[..., None], 3, axis=-1)
    if "A" in img.mode or "a" in img.mode or img.has_transparency_data:
        premultiplied = np.asarray(_reduce(img.convert("RGBA").convert("RGBa"), longest), np.float32) / 255
        colour, alpha = premultiplied[..., :3], premultiplied[..., 3:]
        return colour + (1 - alpha) * _background(colour.mean(axis=-1), alpha[..., 0])
    return np.asarray(_reduce(img.convert("RGB"), longest), np.float32) / 255


def _grey(img, longest=WORKING_SIZE) -> np.ndarray:
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit grey (Pillow reads 16-bit PNG/TIFF so)
        scale = 1.0 if img.mode == "F" else 65535.0
        return np.clip(np.asarray(_reduce(img.convert("F"), longest), np.float32) / scale, 0, 1)
    if "A" in img.mode or "a" in img.mode or img.has_transparency_data:
        return _composite(img.convert("RGBA").convert("LA"), longest)
    return np.asarray(_reduce(img.convert("L"), longest), np.float32) / 255


def _composite(img, longest=WORKING_SIZE) -> np.ndarray:
    """Transparent pixels become a background that contrasts with what is drawn: white under dark ink, else black.

    Drawing apps export strokes on a transparent canvas whose hidden colour is usually black; dropping the
    alpha channel would turn a black digit on it into a black square.
    """
    premultiplied = np.asarray(_reduce(img.convert("La"), longest), np.float32) / 255  # resized without colour bleeding
    ink, alpha = premultiplied[..., 0], premultiplied[..., 1]
    return ink + (1 - alpha) * _background(ink, alpha)


def _background(premultiplied_grey, alpha) -> float:
    """White (1) under a dark drawing, else black (0): the alpha-weighted mean grey of the visible pixels decides."""
    if alpha.sum() == 0:
        raise ImageError("the image is fully transparent: nothing is drawn on it")
    return 1.0 if premultiplied_grey.sum() / alpha.sum() < 0.5 else 0.0


def thumbnail(image, longest=256) -> np.ndarray:
    """A grey (h, w) or colour (h, w, 3) image shrunk to at most `longest` pixels on its longest side."""
    image = np.asarray(image, np.float32)
    scale = longest / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
    small = resize(image, size).astype(np.float32) / 255
    return small[..., 0] if image.ndim == 2 else small


def _reduce(img, longest=WORKING_SIZE):
    """Shrink to at most `longest` pixels on the longest side, averaging pixels (anti-aliased); never enlarge."""
    scale = longest / max(img.size) if longest else 1
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BOX)


def plain_input(image, size=DIGIT_SHAPE[:2]) -> np.ndarray:
    """No preprocessing: a grey (h, w) or colour (h, w, 3) image resized to `size`, values as they are, as
    (H, W, C) float32 in [0, 1]."""
    image = np.asarray(image, np.float32)
    return resize(image, size).astype(np.float32) / 255 if image.shape[:2] != tuple(size) else \
        np.clip(image if image.ndim == 3 else image[..., None], 0, 1)


def mnist_like(grey, size=DIGIT_SHAPE[:2]) -> np.ndarray:
    """A digit image in any polarity, size and position -> (H, W, 1) float32 of `size` as MNIST digits are made
    (28x28 by default; other sizes keep MNIST's proportions: a box of 20/28 of the field, centred by mass)."""
    x = np.asarray(grey, np.float32)
    if x.ndim != 2 or x.size == 0:
        raise ImageError(f"expected a grey (h, w) image, got an array of shape {x.shape}")
    background = float(np.median(x))  # most of a digit image is background
    if background - x.min() > x.max() - background:  # ink is the extreme farthest from the background
        x = 1 - x
    x = _flatten_background(x)
    ink = float(x.max())
    if ink < MIN_CONTRAST:
        raise ImageError(f"no digit found: nothing stands out of the background (contrast {ink:.2f}, "
                         f"at least {MIN_CONTRAST} needed); draw or photograph a digit")
    x = x / ink
    x[x < NOISE_FLOOR] = 0
    top, bottom, left, right = _ink_box(x)
    box = _fit(_thicken(x[top:bottom, left:right]), max(1, round(BOX * min(size) / DIGIT_SHAPE[0])))
    return _centre_by_mass(box, size)[..., None]


def _flatten_background(x):
    """Subtract the background's slow changes (shadows, vignetting, tinted paper), leaving ink on about 0.

    The background level near each point is the darkest of the neighbouring cells of a coarse grid: bright
    ink is thinner than a cell, so it never is the darkest, while a shadow spans many cells.
    """
    height, width = x.shape
    scale = BACKGROUND_GRID / max(height, width)
    if scale >= 1:  # a small image (e.g. 28x28): one level for all
        return np.clip(x - np.median(x), 0, 1)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    cells = Image.fromarray(x, "F").resize(size, Image.Resampling.BOX)
    cells = Image.fromarray(_rank_filter(np.asarray(cells, np.float32), 5, np.minimum), "F")
    level = cells.resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(x - np.asarray(level, np.float32), 0, 1)


def _ink_box(x):
    """Rows and columns that hold the ink, without the last SPECK_MASS of it at each edge (specks of dust)."""
    def span(profile):
        cumulative = np.cumsum(profile) / profile.sum()
        first = int(np.searchsorted(cumulative, SPECK_MASS, side="right"))
        last = int(np.searchsorted(cumulative, 1 - SPECK_MASS, side="left"))
        return first, max(last, first) + 1

    top, bottom = span(x.sum(axis=1))
    left, right = span(x.sum(axis=0))
    return top, bottom, left, right


def stroke_width(x) -> float:
    """Typical pen width of the ink in `x`, in pixels: the shorter of the mean horizontal and vertical ink runs.

    A run across a stroke is about as long as the stroke is wide; a run along it is longer.
    """
    ink = np.pad(x >= 0.5, 1)
    runs = [np.count_nonzero(np.diff(ink.astype(np.int8), axis=axis) == 1) for axis in (0, 1)]
    return float(np.count_nonzero(ink) / max(max(runs), 1))


def _thicken(crop):
    """Widen strokes that would be thinner than MNIST's once in the 20x20 box (a fine pen on a big photo).

    Done on the crop reduced to 4x the box, with a square dilation of the needed width; never thins.
    """
    scale = 4 * BOX / max(crop.shape)
    if scale < 1:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = np.asarray(Image.fromarray(crop, "F").resize(size, Image.Resampling.BOX), np.float32)
        crop = crop / crop.max()
    wanted = MIN_STROKE * max(crop.shape) / BOX
    missing = wanted - stroke_width(crop)
    if missing < 1:
        return crop
    return _rank_filter(crop, 2 * round(missing / 2) + 1, np.maximum)


def _rank_filter(x, size, extreme):
    """Pillow's MinFilter or MaxFilter (`extreme` np.minimum or np.maximum over each size x size window, edges
    repeated) in NumPy, a row pass then a column pass: Pillow sorts every window, 170 us for 32x32 where this
    takes 15."""
    height, width = x.shape
    padded = np.pad(x, size // 2, mode="edge")
    across = functools.reduce(extreme, (padded[:, i:i + width] for i in range(size)))
    return functools.reduce(extreme, (across[i:i + height] for i in range(size)))


def _fit(crop, size):
    """Scale so the longer side is `size` pixels, keeping the aspect ratio, with anti-aliasing."""
    height, width = crop.shape
    scale = size / max(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(Image.fromarray(np.ascontiguousarray(crop, np.float32), "F")
                        .resize(new, Image.Resampling.BILINEAR), np.float32)
    return np.clip(fitted / max(float(fitted.max()), 1e-6), 0, 1)


def _centre_by_mass(box, size):
    """Place `box` in a field of `size` with its centre of mass at the field's centre (kept whole inside it), where
    MNIST puts it (mean centre of mass of its digits: row 14.0, column 14.0 of 28x28)."""
    field = np.zeros(tuple(size), np.float32)
    height, width = box.shape
    rows, cols = np.indices(box.shape)
    total = float(box.sum())
    top = int(np.clip(round(size[0] / 2 - (rows * box).sum() / total), 0, size[0] - height))
    left = int(np.clip(round(size[1] / 2 - (cols * box).sum() / total), 0, size[1] - width))
    field[top:top + height, left:left + width] = box
    return field


def is_image_file(path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES and not Path(path).name.startswith(".")
