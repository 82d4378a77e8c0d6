"""Pictures of a handwritten digit, made into inputs like MNIST's.

:func:`read_image` opens an image file safely (raster formats only, the size
checked from the header before any pixel is decoded); :func:`prepare_digit`
turns a picture of one digit into a 784-vector the way MNIST's digits were
made, for ``mlp predict``. Pillow and scipy are imported only when used.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from .._validation import check_path

__all__ = ["prepare_digit", "read_image", "MAX_IMAGE_PIXELS"]

# Images larger than this are refused before their pixels are decoded: the
# size comes from the file's header, and a small file can claim a huge one.
# 50 megapixels admits any camera photo.
MAX_IMAGE_PIXELS = 50_000_000

# Raster formats whose Pillow readers only decode pixels. EPS and PDF are
# left out on purpose: Pillow hands them to Ghostscript, which runs the
# PostScript program inside the file.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO")

# Working resolution: larger images are reduced to this longest side first,
# which keeps a digit's strokes and bounds the memory used.
_WORKING_SIDE = 1024
# The steps of LeCun's MNIST preparation: the digit is scaled to fit a
# 20x20 box and its centre of mass put at the centre of a 28x28 field
# (pixel (14, 14) counting from 0: MNIST's mean centre of mass).
_DIGIT_BOX = 20
_FIELD = 28
_CENTRE = 14.0
# The thickness check runs on the digit scaled to fit this box.
_STROKE_BOX = 80
# Stroke width / box size: MNIST's digits range from 0.11 to 0.26 (99% of
# them, measured as 2 * ink area / ink boundary). A digit drawn thinner than
# _THIN (a pen line on a large photo) is thickened to _STROKE_TARGET, so the
# model sees strokes like those it learned from.
_THIN = 0.07
_STROKE_TARGET = 0.12
# Contrast below this (on a 0..1 scale) is not ink: an empty or blank image.
_MIN_CONTRAST = 0.1
# Ink found after normalising contrast: a pixel counts towards the digit's
# extent above this; blobs smaller than _SPECK of the largest are dust.
_INK = 0.25
_SPECK = 0.02
# Ink that spans less than this share of the picture's shorter side (or 3
# pixels) is a speck, not a digit: a digit photographed or drawn on its own
# spans a good part of the frame (MNIST's test digits pasted 6x enlarged into
# canvases 400 pixels wider still span 30% of them).
_MIN_DIGIT_EXTENT = 0.03


def _require_pillow(what):
    try:
        import PIL.Image
    except ImportError:
        raise ImportError(f"{what} needs Pillow: pip install Pillow") from None
    return PIL.Image


def _check_image_size(width, height, source):
    if width < 1 or height < 1:
        raise ValueError(f"{source}: the image is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{source}: the image is {width}x{height} pixels; images above "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels are refused (scale it down first)"
        )


def read_image(path):
    """Open an image file safely, as a Pillow image with its pixels decoded.

    Only raster formats (PNG, JPEG, GIF, BMP, TIFF, WebP, PNM, TGA, ICO) are
    read; EPS and PDF are refused because reading them would run code. The
    image's size is checked against ``MAX_IMAGE_PIXELS`` from its header,
    before any pixels are decoded. A camera's EXIF orientation is applied.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    PIL.Image.Image

    Raises
    ------
    FileNotFoundError, ValueError (not a readable image, too large, truncated),
    ImportError (Pillow is not installed).
    """
    path = Path(os.fsdecode(check_path(path, "path"))).expanduser()
    Image = _require_pillow("reading images")
    if not path.exists():
        raise FileNotFoundError(f"no image file at {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    with warnings.catch_warnings():
        # Pillow warns, then raises, above its own (looser) pixel limit.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Register every plugin so that the formats named are known; only
        # those Pillow was built with (WebP needs libwebp) are asked for.
        Image.init()
        formats = [name for name in IMAGE_FORMATS if name in Image.OPEN]
        try:
            opened = Image.open(path, formats=formats)
        except Image.UnidentifiedImageError:
            raise ValueError(f"{path} is not an image mlp can read (use PNG, JPEG, GIF, BMP, "
                             "TIFF or WebP)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{path}: refused as a possible decompression bomb ({exc})") from None
        except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error) as exc:
            raise ValueError(f"{path}: cannot read the image ({exc})") from None
        with opened:
            _check_image_size(opened.width, opened.height, path)
            if opened.width * opened.height > _WORKING_SIDE**2:
                # JPEG decodes at 1/2, 1/4 or 1/8 scale directly; a no-op elsewhere.
                opened.draft(None, (_WORKING_SIDE, _WORKING_SIDE))
            try:
                opened.load()
                image = opened.convert("RGBA") if opened.mode == "P" else opened.copy()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ValueError(f"{path}: refused as a possible decompression bomb "
                                 f"({exc})") from None
            except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error) as exc:
                # A damaged or truncated file: Pillow's decoders raise all of these.
                raise ValueError(f"{path}: cannot decode the image ({exc})") from None
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def _composite_on_white(rgba):
    """Grey levels in [0, 1] of (h, w, 4) RGBA floats in [0, 1] laid over white paper."""
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
    alpha = rgba[..., 3]
    return grey * alpha + (1 - alpha)


def _pil_to_grey(image):
    """float64 (h, w) grey levels in [0, 1] of a Pillow image."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greys: Pillow's convert("L") would clip them.
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            return _array_to_grey(pixels, "image")
        return np.clip(pixels / (65535.0 if pixels.max() > 255 else 255.0), 0, 1)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        pixels = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        return _composite_on_white(pixels)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


def _array_to_grey(array, name):
    """float64 (h, w) grey levels in [0, 1] of an image array."""
    arr = np.asarray(array)
    if arr.dtype == object or not (arr.dtype == np.bool_ or arr.dtype.kind in "uif"):
        raise TypeError(f"{name} must be an array of pixel values, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        hint = " (reshape a flat 784-vector to (28, 28))" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be a grey (h, w) or colour (h, w, 3 or 4) image, got "
                         f"shape {arr.shape}{hint}")
    _check_image_size(arr.shape[1], arr.shape[0], name)
    if arr.dtype == np.bool_:
        pixels = arr.astype(np.float64)
    elif arr.dtype.kind in "ui":
        top = 65535 if arr.dtype == np.uint16 else 255
        if arr.min() < 0 or arr.max() > top:
            raise ValueError(f"{name}: integer pixels must lie in 0..{top}, got "
                             f"{arr.min()}..{arr.max()}")
        pixels = arr / float(top)
    else:
        pixels = arr.astype(np.float64)
        if not np.isfinite(pixels).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"{name}: float pixels must lie in [0, 1], got {pixels.min():g}.."
                             f"{pixels.max():g} (divide 0..255 values by 255)")
    if pixels.ndim == 3:
        if pixels.shape[2] == 4:
            return _composite_on_white(pixels)
        return pixels @ np.array([0.299, 0.587, 0.114])
    return pixels


def _resize(pixels, width, height):
    """float pixels resized with Lanczos filtering (antialiased when shrinking)."""
    Image = _require_pillow("prepare_digit")
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def _fit(pixels, box):
    """pixels scaled so that the longer side is `box`, keeping the aspect ratio."""
    height, width = pixels.shape
    scale = box / max(height, width)
    return _resize(pixels, max(1, round(width * scale)), max(1, round(height * scale)))


def _bounding_box(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def _stroke_width(mask):
    """Mean stroke width of the ink in mask, in pixels: 2 * area / boundary."""
    from scipy import ndimage

    boundary = np.count_nonzero(mask & ~ndimage.binary_erosion(mask))
    return 2 * np.count_nonzero(mask) / max(boundary, 1)


def _thicken(pixels):
    """Dilate strokes much thinner than MNIST's up to an MNIST-like width."""
    from scipy import ndimage

    box = max(pixels.shape)
    width = _stroke_width(pixels > _INK)
    if width >= _THIN * box:
        return pixels
    radius = max(1, round((_STROKE_TARGET * box - width) / 2))
    # Pad first so that the thickened strokes are not cut at the crop's edge.
    padded = np.pad(pixels, radius)
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return ndimage.grey_dilation(padded, footprint=x * x + y * y <= radius * radius)


def prepare_digit(image, *, invert=None):
    """Turn a picture of one handwritten digit into an MNIST-like input vector.

    The steps follow how MNIST's digits were made: convert to grey; make the
    ink light on a dark background (MNIST's polarity); crop to the ink's
    bounding box; scale it to fit a 20x20 box, keeping the aspect ratio; put
    its centre of mass at the centre of a 28x28 field. Besides, contrast is
    stretched so that the background is 0 and the darkest ink 1, specks of
    dust far smaller than the digit are dropped, and strokes much thinner
    than MNIST's (a pen line photographed large) are thickened.

    Parameters
    ----------
    image : str, os.PathLike, PIL.Image.Image or ndarray
        A file (PNG, JPEG, GIF, BMP, TIFF, WebP, ...; any size, colour or
        grey; transparent pixels count as white paper), a Pillow image, or an
        array: (h, w) grey or (h, w, 3 or 4) RGB(A), with integer pixels in
        0..255 (0..65535 for uint16) or floats in [0, 1].
    invert : bool or None
        Whether the digit is dark on a light background. None decides from
        the border of the image: a light border means dark ink.

    Returns
    -------
    ndarray of float32, shape (784,)
        Values in [0, 1], background 0; row-major 28x28, like
        ``load_mnist()`` images, ready for ``model.predict(x[None])``.

    Raises
    ------
    ValueError
        An unreadable or empty image, or one with no ink (blank).
    FileNotFoundError
        A path with no file.
    TypeError
        An `image` or `invert` of the wrong type.
    ImportError
        Pillow is not installed (arrays need it too, for resizing).
    """
    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
        grey = _pil_to_grey(read_image(image))
    elif isinstance(image, np.ndarray):
        source = "image"
        grey = _array_to_grey(image, "image")
    else:
        Image = _require_pillow("prepare_digit")
        if not isinstance(image, Image.Image):
            raise TypeError("image must be a path, a PIL.Image.Image or a numpy array, got "
                            f"{type(image).__name__}")
        source = "image"
        _check_image_size(image.width, image.height, source)
        grey = _pil_to_grey(image)
    if invert is not None and not isinstance(invert, (bool, np.bool_)):
        raise TypeError(f"invert must be True, False or None, got {invert!r}")
    if max(grey.shape) > _WORKING_SIDE:
        grey = _fit(grey, _WORKING_SIDE)

    height, width = grey.shape
    frame = max(1, min(height, width) // 20)
    border = np.concatenate([grey[:frame].ravel(), grey[-frame:].ravel(),
                             grey[:, :frame].ravel(), grey[:, -frame:].ravel()])
    if invert is None:
        invert = np.median(border) > 0.5
    ink = 1 - grey if invert else grey
    background = float(np.median(1 - border if invert else border))
    contrast = float(ink.max()) - background
    if contrast < _MIN_CONTRAST:
        raise ValueError(f"{source}: no ink found: the image is blank (one shade, "
                         "without a digit)")
    # Stretch: background to 0, darkest ink to 1, the faintest tenth (paper
    # texture, JPEG noise) to 0 as well.
    floor = background + 0.1 * contrast
    ink = np.clip((ink - floor) / (0.9 * contrast), 0, 1)

    from scipy import ndimage

    labels, count = ndimage.label(ink > _INK)
    if count == 0:
        raise ValueError(f"{source}: no ink found: the image is blank")
    sizes = np.bincount(labels.ravel())[1:]
    dust = np.flatnonzero(sizes < _SPECK * sizes.max()) + 1
    if dust.size:
        ink[np.isin(labels, dust)] = 0
    frame = min(ink.shape)
    ink = ink[_bounding_box(np.isin(labels, np.flatnonzero(sizes >= _SPECK * sizes.max()) + 1))]
    if max(ink.shape) < max(3, _MIN_DIGIT_EXTENT * frame):
        raise ValueError(f"{source}: no digit found: the only ink is a speck of "
                         f"{ink.shape[1]} by {ink.shape[0]} pixels, in a picture {frame} "
                         f"pixels across")

    if max(ink.shape) > _STROKE_BOX:
        ink = _fit(ink, _STROKE_BOX)
        ink = np.clip(ink / ink.max(), 0, 1)
    ink = _thicken(ink)
    digit = np.clip(_fit(ink, _DIGIT_BOX), 0, 1)
    if not digit.max() > 0:
        raise ValueError(f"{source}: no ink found: the image is blank")
    digit /= digit.max()

    # Centre of mass to the field's centre, moving by whole pixels (as MNIST
    # did) and never pushing ink out of the field.
    rows, columns = np.indices(digit.shape)
    mass = digit.sum()
    top = round(_CENTRE - (rows * digit).sum() / mass)
    left = round(_CENTRE - (columns * digit).sum() / mass)
    top = min(max(top, 0), _FIELD - digit.shape[0])
    left = min(max(left, 0), _FIELD - digit.shape[1])
    field = np.zeros((_FIELD, _FIELD), dtype=np.float32)
    field[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return field.reshape(-1)
