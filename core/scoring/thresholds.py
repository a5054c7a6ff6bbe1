"""Every number the tier policy decides with, in one leaf module.

Why a module of its own: the guardrails (which measure) and the policy (which
decides) both need these values, and neither may import the other.
"""

#: Used when a checkpoint carries no calibrated tiers (p < 0.2 real, p ≥ 0.8 fake).
DEFAULT_TIERS = {"real_below": 0.2, "fake_at_or_above": 0.8}
#: Sharpness (variance of the Laplacian over the sharpest quarter of the image, at a 512 px
#: reference size) below which the image has no fine detail anywhere. Chosen on corpus train/val:
#: sharp photos have ≥ 100 (1st percentile), the same photos after a Gaussian blur of sigma 1.5
#: have a median of 19 and after sigma 2 a 95th percentile of 21.
BLUR_THRESHOLD = 20.0
#: Estimated JPEG quality below which fine detail is considered destroyed (visible 8×8 blocking;
#: social platforms re-encode at 70–85, well above it).
LOW_JPEG_QUALITY = 40
#: Image shorter side / model input side below which the model mostly sees interpolation.
UPSCALE_FRACTION = 0.5
#: Shorter side (px) below which an image is too small to judge whatever the model's input size:
#: a thumbnail has been downscaled (the pixel-level traces a 9×9 detector reads are averaged
#: away) and gives too few patches for a stable mean. Native-resolution models never upscale,
#: so this is their resolution rule; 128 = UPSCALE_FRACTION × the official 256 input, so both
#: rules agree for the official protocol.
MIN_IMAGE_SIDE = 128
#: Faces smaller than this (shorter side, original pixels) are shown but do not move the tier:
#: their crop is mostly interpolation once resized to the model input.
FACE_MIN_SIDE = 32
