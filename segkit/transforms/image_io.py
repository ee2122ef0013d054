"""Reading image and label files, refusing what cannot be trusted with a message naming the file.

Images decode with OpenCV as PaddleSeg's ``cv2.imread(path, cv2.IMREAD_COLOR)`` does, so odd
inputs convert the same way: grey is repeated to three channels, RGBA drops its alpha, 16-bit
images are scaled to 8 bits, palette images are expanded to their colours (``IMREAD_GRAYSCALE``
for ``img_channels: 1``). Bytes are read with NumPy and decoded from memory, so paths with spaces
or non-ASCII characters work on every platform. Refused, naming the file:

* a missing or empty (0-byte) file, or bytes OpenCV cannot decode;
* a truncated JPEG (OpenCV fills the missing part with grey and only prints a warning): the file
  must end with the JPEG end-of-image marker, else PIL, which refuses truncated files, decides;
* an image whose header announces more pixels than PIL's decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million), before anything is decoded.
"""

import io
import os
import warnings

import cv2
import numpy as np
from PIL import Image

from segkit.errors import DatasetError

_JPEG_END = b"\xff\xd9"


def read_file_bytes(path: str, kind: str) -> np.ndarray:
    """The bytes of ``path`` as a uint8 array; a missing or empty file is a DatasetError naming it."""
    if not os.path.isfile(path):
        raise DatasetError(f"{kind} file not found: {path}. Check dataset_root and the file list.")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise DatasetError(f"{kind} {path} is empty (0 bytes): it was not written completely. Replace the file or "
                           "remove it from the dataset.")
    return data


def check_pixel_count(data: np.ndarray, path: str) -> None:
    """Refuse an image whose header announces more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # parses the header only
                width, height = im.size
    except Image.DecompressionBombError:
        width, height = _bomb_size(data)
    except Exception:  # a format PIL does not know: OpenCV decides below
        return
    if limit and width * height > limit:
        raise DatasetError(
            f"image {path} is {width}x{height} ({width * height / 1e6:.0f} million pixels), more than the "
            f"{limit / 1e6:.0f} million of PIL's decompression-bomb limit; refused before decoding. If the file is "
            "genuine, downscale it first (e.g. to the size the model is trained at), or raise "
            "PIL.Image.MAX_IMAGE_PIXELS in your own script."
        )


def _bomb_size(data: np.ndarray):
    """The (width, height) of an image PIL refused to open as a bomb, read with the check off."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _jpeg_complete(data: np.ndarray) -> bool:
    """Whether a JPEG decodes completely: it ends with the end-of-image marker, or PIL loads it."""
    if data[:2].tobytes() != b"\xff\xd8":
        return True  # not a JPEG
    if _JPEG_END in data[-64:].tobytes():
        return True
    try:  # data after the marker (some cameras append some) or a truncated scan: PIL decides
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except OSError:
        return False


def read_image(path: str, img_channels: int = 3, to_rgb: bool = True) -> np.ndarray:
    """Read an image file as an HxWxC uint8 array (RGB unless ``to_rgb`` is False).

    Raises:
        DatasetError: the file is missing, empty, truncated, too large, or not an image OpenCV can decode.
    """
    data = read_file_bytes(path, "image")
    check_pixel_count(data, path)
    flag = cv2.IMREAD_GRAYSCALE if img_channels == 1 else cv2.IMREAD_COLOR
    img = cv2.imdecode(data, flag)
    if img is None:
        raise DatasetError(f"cannot decode image {path}: expected a PNG/JPEG/BMP/TIFF file OpenCV can read "
                           "(the file may be damaged or of another type).")
    if not _jpeg_complete(data):
        raise DatasetError(f"image {path} is a truncated JPEG (its end is missing); replace the file or remove it "
                           "from the dataset.")
    if img.ndim == 2:
        return img[..., None]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if to_rgb else img


def read_label(path: str) -> np.ndarray:
    """Read a label file as stored: palette PNGs give their indices, grey PNGs their values.

    Raises:
        DatasetError: the file is missing, empty, too large or not a readable image.
    """
    data = read_file_bytes(path, "label")
    check_pixel_count(data, path)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)
    except OSError as err:
        raise DatasetError(f"cannot read label {path}: {err}. Expected a single-channel PNG.") from None
