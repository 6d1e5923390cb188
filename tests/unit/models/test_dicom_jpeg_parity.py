"""One radiograph, as the JPEG used in training or as a DICOM object, gives one model input.

The DICOM forms: MONOCHROME2 and MONOCHROME1, 8 and 16 bits stored, with and without a window
(a window that covers the whole range: a window that clips changes the picture itself).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.plain_image import prepare_array
from models.preprocess import PreprocessParams, prepare
from retrain.datasets.images import read_picture

from helpers import fracatlas_root
from models_helpers import make_ds

PARAMS = PreprocessParams(input_size=128, stretch_after_voi=True)


def _jpeg_bytes(grey: np.ndarray, rgb: bool) -> bytes:
    picture = Image.fromarray(grey, mode="L")
    if rgb:  # like most FracAtlas files: a grey image stored in three channels
        picture = picture.convert("RGB")
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _phantom() -> np.ndarray:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:300:1, 0:240:1]
    bone = 150 * np.exp(-(((x - 120) / 30.0) ** 2)) + 40 * (y / 300.0)
    return np.clip(bone + rng.normal(30, 8, bone.shape), 0, 255).astype(np.uint8)


def _forms(decoded: np.ndarray) -> dict[str, object]:
    """DICOM objects carrying the decoded JPEG's grey values (``decoded``: uint8 2-D)."""
    v8 = decoded.astype(np.uint8)
    v16 = decoded.astype(np.uint16) * 257
    return {
        "MONOCHROME2 8-bit": make_ds(v8),
        "MONOCHROME2 16-bit": make_ds(v16),
        "MONOCHROME2 12-bit in 16": make_ds((decoded.astype(np.uint16) * 16), bits_stored=12),
        "MONOCHROME1 8-bit": make_ds(255 - v8, photometric="MONOCHROME1"),
        "MONOCHROME1 16-bit": make_ds(65535 - v16, photometric="MONOCHROME1"),
        "MONOCHROME2 8-bit windowed": make_ds(v8, WindowCenter=127.5, WindowWidth=258),
        "MONOCHROME2 16-bit windowed": make_ds(v16, WindowCenter=32767.5, WindowWidth=65538),
        "MONOCHROME1 16-bit windowed": make_ds(
            65535 - v16, photometric="MONOCHROME1", WindowCenter=32767.5, WindowWidth=65538
        ),
    }


def _check(jpeg: Path) -> None:
    trained_on = prepare_array(read_picture(jpeg), PARAMS)
    picture = np.asarray(read_picture(jpeg), dtype=np.float64)
    grey = picture if picture.ndim == 2 else picture[:, :, :3] @ [0.299, 0.587, 0.114]
    decoded = np.rint(grey).astype(np.uint8)
    for name, ds in _forms(decoded).items():
        prepared = prepare(ds, PARAMS)  # type: ignore[arg-type]
        assert prepared.geometry == trained_on.geometry, name
        np.testing.assert_allclose(prepared.pixels, trained_on.pixels, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("rgb", [False, True])
def test_a_jpeg_and_its_dicom_forms_give_the_same_tensor(tmp_path: Path, rgb: bool) -> None:
    path = tmp_path / "image.jpg"
    path.write_bytes(_jpeg_bytes(_phantom(), rgb))
    _check(path)


def test_without_the_stretch_a_windowed_dicom_differs() -> None:
    """The check above can fail: without ``stretch_after_voi`` the window is taken as is."""
    decoded = _phantom()
    plain = PreprocessParams(input_size=128)
    jpeg_like = prepare_array(decoded, plain)
    windowed = prepare(make_ds(decoded, WindowCenter=127.5, WindowWidth=258), plain)
    assert np.abs(windowed.pixels - jpeg_like.pixels).max() > 0.05


@pytest.mark.parametrize(
    "name", ["Fractured/IMG0000019.jpg", "Non_fractured/IMG0000000.jpg"]
)
def test_fracatlas_images_and_their_dicom_forms(name: str) -> None:
    root = fracatlas_root()
    path = root / "images" / name
    if not path.is_file():  # the share keeps most of the published names; pick another one
        folder = path.parent
        path = sorted(folder.glob("*.jpg"))[0]
    _check(path)
