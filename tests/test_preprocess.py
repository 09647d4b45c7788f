"""Image files of any kind -> MNIST-like 28x28 inputs, and bad files -> ImageError with the reason."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageDraw, ImageFilter

from cnnlab.data import read_idx
from cnnlab.errors import ImageError
from cnnlab.preprocess import MAX_PIXELS, _rank_filter, mnist_like, plain_input, prepare, read_image, stroke_width


def seven(canvas=(300, 300), at=(50, 40), size=200, ink=255, paper=0, mode="L", width=16):
    """A '7' drawn with a pen: asymmetric, so a flip, a rotation or a shift would show."""
    img = Image.new(mode, canvas, paper)
    x, y = at
    ImageDraw.Draw(img).line([(x + 0.15 * size, y), (x + 0.8 * size, y), (x + 0.35 * size, y + size)],
                             fill=ink, width=width, joint="curve")
    return img


def encode(img, fmt="PNG", **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def centre_of_mass(image):
    image = np.asarray(image).squeeze()
    rows, cols = np.indices(image.shape)
    return (rows * image).sum() / image.sum(), (cols * image).sum() / image.sum()


@pytest.fixture(scope="module")
def reference():
    """MNIST's own way round: white ink on black, centred."""
    return prepare(encode(seven())).input


def test_reference_is_shaped_like_an_mnist_digit(reference):
    assert reference.shape == (28, 28, 1) and reference.dtype == np.float32
    image = reference[..., 0]
    assert image.max() == pytest.approx(1.0) and image.min() == 0.0
    rows, cols = np.nonzero(image)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert max(height, width) in (20, 21) and height > width  # the longer side fills the 20x20 box
    assert np.allclose(centre_of_mass(image), (14, 14), atol=0.5)  # where MNIST puts its centres of mass
    top_bar, bottom = image[rows.min():rows.min() + 3], image[rows.max() - 2:rows.max() + 1]
    assert top_bar.sum() > 3 * bottom.sum()  # the 7's bar is at the top: not flipped


def white_paper():
    return seven(ink=0, paper=255)


def off_centre_photo():
    """A small 7 in a corner of a big, beige, shadowed and noisy photo of paper, ink in blue, as a JPEG."""
    ink = np.asarray(seven(canvas=(1600, 1200), at=(1150, 120), size=260, width=18), np.float32) / 255
    shadow = np.linspace(1.0, 0.65, 1600)[None, :]
    rng = np.random.default_rng(0)
    grey = np.clip(0.93 * shadow * (1 - 0.8 * ink) + rng.normal(0, 0.02, ink.shape), 0, 1)
    rgb = grey[..., None] * np.array([1.0, 0.94, 0.82]) + ink[..., None] * np.array([0, 0, 0.3])
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def black_ink_on_transparent():
    """What drawing apps export: black strokes on a canvas of transparent black (0, 0, 0, 0)."""
    img = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    img.putalpha(seven())
    return img


def white_ink_on_transparent():
    img = Image.new("RGBA", (300, 300), (255, 255, 255, 0))
    img.putalpha(seven())
    return img


def sixteen_bit_scan():
    ink = np.asarray(seven(), np.float32) / 255
    return Image.fromarray((60000 - 52000 * ink).astype(np.uint16))  # a light 16-bit scan, dark ink


def transparent_gif():
    img = seven(ink=1, paper=0, mode="P")
    img.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    return img


VARIANTS = {
    "white paper, black ink (PNG)": lambda: encode(white_paper()),
    "off-centre shadowed photo (JPEG)": lambda: encode(off_centre_photo(), "JPEG", quality=85),
    "black ink on transparent (PNG)": lambda: encode(black_ink_on_transparent()),
    "white ink on transparent (PNG)": lambda: encode(white_ink_on_transparent()),
    "16-bit scan (PNG)": lambda: encode(sixteen_bit_scan()),
    "16-bit scan (TIFF)": lambda: encode(sixteen_bit_scan(), "TIFF"),
    "palette with transparency (GIF)": lambda: encode(transparent_gif(), "GIF", transparency=0),
    "white paper (BMP)": lambda: encode(white_paper().convert("RGB"), "BMP"),
    "large canvas, off-centre (PNG)": lambda: encode(seven(canvas=(3000, 2000), at=(200, 1500), size=400, width=32)),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_kind_of_image_becomes_the_same_mnist_digit(variant, reference):
    prepared = prepare(VARIANTS[variant]())
    assert prepared.input.shape == (28, 28, 1) and prepared.input.dtype == np.float32
    assert 0 <= prepared.input.min() and prepared.input.max() <= 1
    assert correlation(prepared.input, reference) > 0.9, variant
    assert np.allclose(centre_of_mass(prepared.input), (14, 14), atol=0.5)


def test_transparency_is_composited_not_dropped():
    drawn = black_ink_on_transparent()
    assert np.asarray(drawn.convert("L")).max() == 0  # without its alpha channel it is one black square
    grey = read_image(encode(drawn))
    assert grey[0, 0] == 1.0 and grey[40, 150] < 0.1  # white canvas, black ink (the 7's bar)


def test_sixteen_bit_images_keep_their_precision():
    gradient = np.linspace(0, 65535, 300 * 300).reshape(300, 300).astype(np.uint16)
    data = encode(Image.fromarray(gradient))
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    grey = read_image(data)
    assert len(np.unique(grey)) > 10_000 and grey.min() == 0 and grey.max() == 1


def test_phone_photos_are_turned_upright_by_their_exif_orientation(reference):
    upright = off_centre_photo()
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # the sensor's pixels; EXIF 6 says: turn 90 right
    exif = Image.Exif()
    exif[0x0112] = 6
    prepared = prepare(encode(sideways, "JPEG", quality=90, exif=exif.tobytes()))
    assert correlation(prepared.input, reference) > 0.9


def test_thin_pen_strokes_are_widened_to_mnist_width():
    fine_pen = seven(canvas=(1000, 1000), at=(300, 200), size=600, width=4)  # 0.7% of the digit's height
    prepared = prepare(encode(fine_pen))
    assert 1.5 <= stroke_width(prepared.input[..., 0]) <= 4  # MNIST's strokes: 2 to 3.8 px (5th-75th percentile)


def test_specks_of_dust_do_not_move_the_digit(reference):
    dusty = white_paper()
    ImageDraw.Draw(dusty).ellipse([285, 285, 287, 287], fill=0)  # a dot in the far corner
    assert correlation(prepare(encode(dusty)).input, reference) > 0.95


def test_first_frame_of_an_animated_gif(reference):
    frames = [white_paper()] + [seven(ink=0, paper=255, at=(20 + 5 * i, 20), size=60) for i in range(30)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 31
    assert correlation(prepare(data).input, prepare(encode(frames[0])).input) > 0.99


def test_no_preprocess_only_resizes_and_scales():
    digit = np.asarray(seven(canvas=(28, 28), at=(4, 4), size=20, width=2))
    prepared = prepare(encode(Image.fromarray(digit)), preprocess=False)
    np.testing.assert_allclose(prepared.input[..., 0], digit / 255, atol=1e-6)
    bigger = plain_input(np.asarray(seven(canvas=(280, 280), at=(40, 40), size=200, width=20), np.float32) / 255)
    assert bigger.shape == (28, 28, 1) and 0.9 < bigger.max() <= 1


@pytest.mark.parametrize("shape, size", [((32, 32), 5), ((80, 57), 3), ((61, 80), 7), ((3, 2), 5)])
def test_the_rank_filters_are_pillows(shape, size):
    x = np.random.default_rng(size).random(shape).astype(np.float32)
    for pillow, extreme in ((ImageFilter.MinFilter, np.minimum), (ImageFilter.MaxFilter, np.maximum)):
        expected = np.asarray(Image.fromarray(x, "F").filter(pillow(size)), np.float32)
        np.testing.assert_array_equal(_rank_filter(x, size, extreme), expected)


# ---------------------------------------------------------------- real MNIST digits


@pytest.fixture(scope="module")
def mnist_digits(mnist_dir):
    return read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:200]


def test_an_mnist_digit_is_already_what_preprocessing_makes(mnist_digits):
    again = [mnist_like(d / 255) for d in mnist_digits]
    assert np.median([correlation(a, d) for a, d in zip(again, mnist_digits)]) > 0.98


def test_photos_of_mnist_digits_come_back_as_the_digits(mnist_digits):
    """Each digit printed dark on light paper, ten times larger, somewhere on a shadowed page, as a JPEG."""
    rng = np.random.default_rng(1)
    scores = []
    for digit in mnist_digits[:40]:
        ink = np.asarray(Image.fromarray(digit).resize((280, 280), Image.Resampling.BILINEAR), np.float32) / 255
        page = np.linspace(0.95, 0.7, 800)[None, :].repeat(600, axis=0)
        top, left = rng.integers(0, 320), rng.integers(0, 520)
        page[top:top + 280, left:left + 280] *= 1 - 0.85 * ink
        page += rng.normal(0, 0.02, page.shape)
        photo = encode(Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8)), "JPEG", quality=85)
        scores.append(correlation(prepare(photo).input, digit))
    assert np.median(scores) > 0.95 and np.percentile(scores, 10) > 0.8


# ---------------------------------------------------------------- bad files


def png_claiming(width, height) -> bytes:
    """A valid little PNG whose header claims another size: what a decompression bomb looks like to open()."""
    data = bytearray(encode(Image.new("L", (8, 8))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def gif_claiming(width, height) -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    return bytes(data)


BAD_FILES = {
    "empty": (lambda: b"", "not an image"),
    "text": (lambda: b"7\n", "not an image"),
    "truncated PNG": (lambda: encode(white_paper())[:300], "truncated or corrupt"),
    "truncated JPEG": (lambda: encode(off_centre_photo(), "JPEG")[:2000], "truncated or corrupt"),
    "20000x20000 PNG": (lambda: png_claiming(20000, 20000), "more pixels than the"),
    "60000x60000 animated GIF": (lambda: gif_claiming(60000, 60000), "more pixels than the"),
    "format not accepted (PPM)": (lambda: encode(white_paper(), "PPM"), "not an image in a readable format"),
    "fully transparent": (lambda: encode(Image.new("RGBA", (50, 50), (0, 0, 0, 0))), "fully transparent"),
    "blank page": (lambda: encode(Image.new("L", (50, 50), 250)), "no digit found"),
    "paper noise only": (lambda: encode(Image.fromarray(
        np.random.default_rng(0).normal(230, 4, (200, 200)).clip(0, 255).astype(np.uint8)), "JPEG"), "no digit found"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_image_error_with_the_reason(case):
    make, reason = BAD_FILES[case]
    with pytest.raises(ImageError, match=reason):
        prepare(make())


def test_pixel_count_is_checked_before_decoding():
    with pytest.raises(ImageError, match="400000000 pixels"):
        read_image(png_claiming(20000, 20000))
    with pytest.raises(ImageError, match=f"8000x6000 is 48,000,000 pixels, more pixels than the {MAX_PIXELS:,}"):
        read_image(png_claiming(8000, 6000))  # under Pillow's limit, over ours
    with pytest.raises(ImageError, match="more pixels than the 1,000 accepted"):
        read_image(encode(white_paper()), max_pixels=1000)


def test_paths_missing_or_folders(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        prepare(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        prepare(tmp_path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_any_bytes_give_an_input_or_an_image_error(data):
    try:
        prepared = prepare(data)
    except ImageError:
        return
    assert prepared.input.shape == (28, 28, 1) and np.isfinite(prepared.input).all()


VALID_FILES = [encode(seven(canvas=(40, 40), at=(5, 5), size=30, width=3).convert(mode), fmt)
               for mode, fmt in [("L", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG"), ("L", "BMP"), ("P", "GIF"),
                                 ("L", "TIFF"), ("I;16", "PNG")]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_FILES), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(1, 10**6))
def test_damaged_image_files_give_an_input_or_an_image_error(data, changes, keep):
    """Valid files with bytes changed and the end cut off: the decoders' error paths, not just the 'what is it'."""
    damaged = bytearray(data[:keep])
    for position, value in changes:
        if damaged:
            damaged[position % len(damaged)] = value
    try:
        prepared = prepare(bytes(damaged))
    except ImageError:
        return
    assert prepared.input.shape == (28, 28, 1) and np.isfinite(prepared.input).all()


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 60), st.integers(1, 60)), elements=st.floats(0, 1, width=32)))
def test_any_grey_array_gives_an_mnist_input_or_an_image_error(grey):
    try:
        image = mnist_like(grey)
    except ImageError:
        return
    assert image.shape == (28, 28, 1) and np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1
