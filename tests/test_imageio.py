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


# ---------------------------------------------------------------------------
# the formats phones upload: HEIC/HEIF (pillow-heif) and AVIF (Pillow's own codec)
# ---------------------------------------------------------------------------
def _formats_manifest():
    import csv

    from .conftest import SHARED

    manifest = SHARED / "unseen" / "formats" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"needs ../shared/unseen/formats (looked for {manifest})")
    with open(manifest, newline="") as fh:
        return manifest.parent.parent, list(csv.DictReader(fh))


def test_phone_originals_decode_upright_or_are_refused_clearly():
    """The four camera originals (3 HEIC from iPhones, 1 AVIF): each decodes to an upright RGB image
    the size the camera saw it, or is refused with a message for people, never a traceback."""
    import hashlib

    from core.errors import DetectorError

    root, rows = _formats_manifest()
    assert len(rows) == 4
    decoded = 0
    for row in rows:
        raw = (root / row["path"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == row["sha256"]
        try:
            d = decode_image(raw)
        except DetectorError as exc:
            assert "Traceback" not in str(exc) and str(exc).endswith((".", ")")), exc
            continue
        decoded += 1
        assert d.image.mode == "RGB" and d.format in ("HEIF", "AVIF") and d.sha256 == row["sha256"]
        assert min(d.image.size) >= 480 and d.frames_note is None
        assert d.exif_orientation in (None, 1)  # the container's rotation is applied: nothing left to turn
    assert decoded >= 3  # at most the one file the manifest calls maybe broken may be refused


def test_iphone_portrait_heic_comes_out_upright():
    """IMG_5195 was shot in portrait: its pixels are stored landscape with a rotation, so an upright
    decode is taller than wide."""
    root, rows = _formats_manifest()
    d = decode_image(root / "formats" / "IMG_5195.HEIC")
    assert d.image.height > d.image.width


@pytest.mark.parametrize("name", ["heic-iphone7.heic", "Irvine_CA.avif"])
def test_broken_heic_and_avif_get_the_same_clear_errors(name):
    from core.errors import DetectorError
    from core.imageio import check_image

    root, _ = _formats_manifest()
    raw = (root / "formats" / name).read_bytes()
    kind = "AVIF" if name.endswith("avif") else "HEIC"
    # cut off half-way: libheif would decode the missing tiles as garbage; the box sizes give it away
    for cut in (raw[: len(raw) // 2], raw[:3000]):
        with pytest.raises(TruncatedImageError, match=f"{kind} file is truncated"):
            decode_image(cut)
        with pytest.raises(TruncatedImageError):
            check_image(cut)  # the pre-flight check of score/batch says the same, before any model loads
    # the header intact, the image data gone
    with pytest.raises(DetectorError, match=f"{kind} file is (damaged|truncated)"):
        decode_image(raw[:32] + b"\x00" * 4000)
    with pytest.raises(UnsupportedImageError, match="empty"):
        decode_image(b"")


def test_heic_and_avif_written_here_round_trip_with_their_orientation():
    """A HEIC and an AVIF made in the test (pillow-heif's encoder, Pillow's AVIF encoder) decode to the
    picture written; an EXIF orientation in the AVIF is applied."""
    import pillow_heif

    photo = make_photo(160, 96, seed=4)
    heif = pillow_heif.from_pillow(photo)
    buf = io.BytesIO()
    heif.save(buf, quality=95)
    d = decode_image(buf.getvalue())
    assert d.format == "HEIF" and d.image.size == (160, 96)
    assert np.abs(np.asarray(d.image, dtype=float) - np.asarray(photo, dtype=float)).mean() < 12

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    buf = io.BytesIO()
    photo.save(buf, "AVIF", quality=90, exif=exif.tobytes())
    d = decode_image(buf.getvalue())
    assert d.format == "AVIF" and d.image.size == (96, 160)


def test_every_door_lists_the_new_suffixes(tmp_path):
    from core.batch.inputs import list_inputs
    from core.imageio import IMAGE_SUFFIXES, SUPPORTED_FORMATS
    from core.review.store.blobs import sniff_ext

    assert {".heic", ".heif", ".avif"} <= IMAGE_SUFFIXES and "HEIC" in SUPPORTED_FORMATS and "AVIF" in SUPPORTED_FORMATS
    for name in ("a.HEIC", "b.avif", "c.heif"):
        (tmp_path / name).write_bytes(b"x")
    assert len(list_inputs(tmp_path)) == 3
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(make_photo(64, 64)).save(buf)
    assert sniff_ext(buf.getvalue()) == ".heic"
    with pytest.raises(UnsupportedImageError, match="HEIC/HEIF, AVIF"):
        decode_image(b"definitely not an image")
