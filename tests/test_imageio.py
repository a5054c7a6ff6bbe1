"""Every decode case of the safe decoder, on images the tests generate."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageDecodeError, ImageTooLargeError, TruncatedImageError, UnsupportedImageError
from core.imageio import decode_image

from .conftest import encode, make_photo


def test_plain_rgb_jpeg_and_sha():
    import hashlib

    data = encode(make_photo(), "JPEG", quality=90)
    d = decode_image(data)
    assert d.image.mode == "RGB" and d.image.size == (320, 240)
    assert d.format == "JPEG" and d.sha256 == hashlib.sha256(data).hexdigest()


def test_path_and_missing_file(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(encode(make_photo()))
    assert decode_image(p).width == 320
    with pytest.raises(ImageDecodeError, match="not found"):
        decode_image(tmp_path / "missing.png")


@pytest.mark.parametrize("payload", [b"", b"hello, not an image", b"\x00" * 100])
def test_not_an_image(payload):
    with pytest.raises(UnsupportedImageError):
        decode_image(payload)


def test_pixel_limit_refuses_before_decoding():
    big = encode(Image.new("RGB", (3000, 3000), (10, 20, 30)), "PNG")
    with pytest.raises(ImageTooLargeError, match="limit"):
        decode_image(big, max_pixels=4_000_000)
    assert decode_image(big, max_pixels=10_000_000).width == 3000


def test_decompression_bomb_guard(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    data = encode(Image.new("L", (1500, 1500)), "PNG")  # > limit: Pillow warns, we refuse
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=10**9)


def test_truncated_jpeg_gives_a_clear_message():
    data = encode(make_photo(640, 480), "JPEG", quality=90)
    with pytest.raises(TruncatedImageError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_truncated_png():
    data = encode(make_photo(640, 480), "PNG")
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    d = decode_image(buf.getvalue())
    assert d.n_frames == 3
    r, g, b = d.image.getpixel((5, 5))
    assert r > 200 and g < 50 and b < 50


def test_greyscale_L():
    d = decode_image(encode(Image.new("L", (20, 10), 77), "PNG"))
    assert d.mode == "L" and d.image.mode == "RGB" and d.image.getpixel((0, 0)) == (77, 77, 77)


def test_LA_and_RGBA_are_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    d = decode_image(encode(rgba, "PNG"))
    assert d.image.getpixel((5, 5)) == (255, 255, 255)
    assert d.image.getpixel((0, 0)) == (255, 0, 0)
    la = Image.new("LA", (10, 10), (0, 128))
    px = decode_image(encode(la, "PNG")).image.getpixel((1, 1))
    assert 120 <= px[0] <= 135  # black at half alpha over white


def test_palette_with_and_without_transparency():
    p = Image.new("P", (10, 10), 0)
    p.putpalette([0, 0, 255] + [0] * 765)
    assert decode_image(encode(p, "PNG")).image.getpixel((0, 0)) == (0, 0, 255)
    p.info["transparency"] = 0
    assert decode_image(encode(p, "PNG", transparency=0)).image.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg():
    d = decode_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    r, g, b = d.image.getpixel((8, 8))
    assert d.mode == "CMYK" and r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    arr = np.full((8, 8), 40000, dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    d = decode_image(encode(img, "PNG"))
    value = d.image.getpixel((0, 0))[0]
    assert abs(value - round(40000 / 65535 * 255)) <= 1


def test_I16_tiff():
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    d = decode_image(encode(Image.fromarray(arr), "TIFF"))
    assert d.image.mode == "RGB" and d.image.getpixel((7, 7))[0] == round(63000 / 65535 * 255)


def test_16_bit_rgb_png_reads_as_8_bit_rgb():
    import zlib, struct  # write a 48-bit PNG by hand; Pillow cannot save one

    h, w = 4, 5
    raw = b"".join(b"\x00" + (np.full((w, 3), 0xFF00, dtype=">u2").tobytes()) for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    d = decode_image(png)
    assert d.image.size == (5, 4) and d.image.mode == "RGB"
    assert d.image.getpixel((0, 0))[0] >= 250


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF"])
def test_other_formats(fmt):
    d = decode_image(encode(make_photo(64, 48), fmt))
    assert d.image.size == (64, 48) and d.format == fmt


def _exif_rotated_twin(img: Image.Image, orientation: int) -> bytes:
    """Store the pixels so that applying ``orientation`` gives ``img`` back."""
    inverse = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,   # EXIF 6 means: rotate 90 CW to display
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = img.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "PNG", exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    img = make_photo(64, 40)
    d = decode_image(_exif_rotated_twin(img, orientation))
    assert d.exif_orientation == orientation
    assert d.image.size == img.size
    assert np.array_equal(np.asarray(d.image), np.asarray(img))
    ignored = decode_image(_exif_rotated_twin(img, orientation), exif_policy="ignore")
    if orientation in (6, 8):
        assert ignored.image.size == (40, 64)
