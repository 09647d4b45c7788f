"""Any image file -> the (28, 28, 1) input an MNIST model expects, made the way MNIST itself was made.

MNIST digits are white ink on black, size-normalised into a 20x20 box (aspect ratio kept, anti-aliased)
and centred by their centre of mass in a 28x28 field (LeCun et al.). A photo, scan or drawing differs in
each of these: dark ink on light paper, paper texture and shadows, any size, anywhere in the frame.
`mnist_like` undoes all that; `plain_input` is for images that are already MNIST-style.

Untrusted files are safe to pass in: only five raster formats are decoded, the pixel count is checked from
the header before a pixel is decoded, animated files give their first frame only, and every failure is an
ImageError that says what was wrong.
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .config import IMAGE_SIZE
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


@dataclass
class Prepared:
    """An image as read (grey, transparency composited, at most WORKING_SIZE) and the model input made from it."""

    original: np.ndarray  # (h, w) float32 in [0, 1], 1 is white
    input: np.ndarray  # (28, 28, 1) float32 in [0, 1], MNIST-style: 1 is ink


def prepare(source, preprocess=True, max_pixels=MAX_PIXELS) -> Prepared:
    """Read `source` (a path, bytes or a binary file) and make the model input from it."""
    grey = read_image(source, max_pixels)
    return Prepared(grey, mnist_like(grey) if preprocess else plain_input(grey))


def read_image(source, max_pixels=MAX_PIXELS) -> np.ndarray:
    """Decode an image into grey (h, w) float32 in [0, 1], 1 = white, with transparency composited.

    `source` is a path, bytes or a binary file. Images larger than WORKING_SIZE are reduced (anti-aliased).
    """
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
            img.draft(None, (WORKING_SIZE, WORKING_SIZE))  # JPEG decodes at 1/2, 1/4 or 1/8 scale: faster
            img.load()  # the first frame only: animated GIF, APNG and multi-page TIFF stop here
            return _grey(ImageOps.exif_transpose(img))  # phones record their orientation in EXIF
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


def _grey(img) -> np.ndarray:
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit grey (Pillow reads 16-bit PNG/TIFF so)
        scale = 1.0 if img.mode == "F" else 65535.0
        return np.clip(np.asarray(_reduce(img.convert("F")), np.float32) / scale, 0, 1)
    if "A" in img.mode or "a" in img.mode or img.has_transparency_data:
        return _composite(img.convert("RGBA").convert("LA"))
    return np.asarray(_reduce(img.convert("L")), np.float32) / 255


def _composite(img) -> np.ndarray:
    """Transparent pixels become a background that contrasts with what is drawn: white under dark ink, else black.

    Drawing apps export strokes on a transparent canvas whose hidden colour is usually black; dropping the
    alpha channel would turn a black digit on it into a black square.
    """
    premultiplied = np.asarray(_reduce(img.convert("La")), np.float32) / 255  # resized without colour bleeding
    ink, alpha = premultiplied[..., 0], premultiplied[..., 1]
    if alpha.sum() == 0:
        raise ImageError("the image is fully transparent: nothing is drawn on it")
    drawn_is_dark = ink.sum() / alpha.sum() < 0.5  # alpha-weighted mean grey of the visible pixels
    return ink + (1 - alpha) * (1.0 if drawn_is_dark else 0.0)


def thumbnail(grey, longest=256) -> np.ndarray:
    """A grey image shrunk to at most `longest` pixels on its longest side, to keep or to show."""
    return np.asarray(_reduce(Image.fromarray(np.asarray(grey, np.float32), "F"), longest), np.float32)


def _reduce(img, longest=WORKING_SIZE):
    """Shrink to at most `longest` pixels on the longest side, averaging pixels (anti-aliased); never enlarge."""
    scale = longest / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BOX)


def plain_input(grey) -> np.ndarray:
    """No preprocessing, for inputs that are already MNIST-style: resize to 28x28, values as they are."""
    img = Image.fromarray(np.asarray(grey, np.float32), "F").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(img, np.float32), 0, 1)[..., None]


def mnist_like(grey) -> np.ndarray:
    """A digit image in any polarity, size and position -> (28, 28, 1) float32 as MNIST digits are made."""
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
    box = _fit(_thicken(x[top:bottom, left:right]), BOX)
    return _centre_by_mass(box)[..., None]


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
    level = cells.filter(ImageFilter.MinFilter(5)).resize((width, height), Image.Resampling.BILINEAR)
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
    return np.asarray(Image.fromarray(crop, "F").filter(ImageFilter.MaxFilter(2 * round(missing / 2) + 1)), np.float32)


def _fit(crop, size):
    """Scale so the longer side is `size` pixels, keeping the aspect ratio, with anti-aliasing."""
    height, width = crop.shape
    scale = size / max(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(Image.fromarray(np.ascontiguousarray(crop, np.float32), "F")
                        .resize(new, Image.Resampling.BILINEAR), np.float32)
    return np.clip(fitted / max(float(fitted.max()), 1e-6), 0, 1)


def _centre_by_mass(box):
    """Place `box` in a 28x28 field with its centre of mass at the field's centre (kept whole inside it)."""
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    height, width = box.shape
    rows, cols = np.indices(box.shape)
    total = float(box.sum())
    centre = IMAGE_SIZE / 2  # where MNIST puts it (mean centre of mass of its digits: row 14.0, column 14.0)
    top = int(np.clip(round(centre - (rows * box).sum() / total), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(centre - (cols * box).sum() / total), 0, IMAGE_SIZE - width))
    field[top:top + height, left:left + width] = box
    return field


def is_image_file(path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES and not Path(path).name.startswith(".")
