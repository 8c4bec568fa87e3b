"""Alignment, masks, inpainting and dataset preparation on a real photograph (no gRPC)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from ganfolk.runtime.errors import FailedPrecondition, NotFound
from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.images import decode_image
from ganfolk.runtime.settings import load_settings
from ganfolk.runtime.storage import LocalStore
from services.align.config import AlignSettings
from services.align.core import (
    Aligner,
    AlignParams,
    LamaInpainter,
    Progress,
    load_aligner,
    prepare_dataset,
    quad_inverse_matrix,
)
from services.align.detect import LANDMARKS_FILE, locate_model
from tests.align.helpers import (
    astronaut,
    corrupt_png,
    encode,
    eye_centres,
    no_face,
    png_header_only,
)


@pytest.fixture(scope="module")
def aligner() -> Aligner:
    return load_aligner(load_settings(AlignSettings))


def angle(left: np.ndarray, right: np.ndarray) -> float:
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def test_models_are_located_on_disk() -> None:
    path = locate_model(LANDMARKS_FILE)
    assert path is not None and path.stat().st_size > 50_000_000


def test_landmarks_fall_inside_the_face_box(aligner: Aligner) -> None:
    faces = aligner.detect(astronaut())
    assert faces, "dlib found no face on the astronaut portrait"
    face = faces[0]
    left, top, right, bottom = face.box
    # The astronaut's face: centred near (220, 120) in the 512 x 512 photo.
    assert 150 < (left + right) / 2 < 290 and 60 < (top + bottom) / 2 < 180
    lm = face.landmarks
    assert lm.shape == (68, 2)
    inner = lm[17:]  # brows, eyes, nose, mouth
    assert (inner[:, 0] > left).all() and (inner[:, 0] < right).all()
    assert (inner[:, 1] > top).all() and (inner[:, 1] < bottom).all()
    # dlib boxes cut the chin: the jaw line may pass the box edge by 15 % of its size.
    mx, my = 0.15 * (right - left), 0.15 * (bottom - top)
    assert (lm[:, 0] > left - mx).all() and (lm[:, 0] < right + mx).all()
    assert (lm[:, 1] > top - my).all() and (lm[:, 1] < bottom + my).all()
    eye_l, eye_r = eye_centres(lm)
    assert eye_l[0] < eye_r[0] and abs(eye_l[1] - eye_r[1]) < 0.2 * (right - left)


@pytest.mark.parametrize("looseness", [1.0, 1.3])
def test_aligned_eyes_are_level_and_where_expected(aligner: Aligner, looseness: float) -> None:
    size = 512
    [face] = aligner.align(astronaut(), AlignParams(output_size=size, looseness=looseness))
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
    assert abs(face.rotation_degrees) > 1.0, "the astronaut's head is tilted; alignment must rotate it"

    # Where the source eyes land by the transform: exactly level, centred, FFHQ's scale.
    src_l, src_r = eye_centres(face.landmarks)
    out_l, out_r = face.to_output(np.stack([src_l, src_r]))
    assert abs(angle(out_l, out_r)) < 1e-6
    eye_dist_src = float(np.hypot(*(src_r - src_l)))
    mouth = (face.landmarks[48] + face.landmarks[54]) / 2
    e2m = float(np.hypot(*(mouth - (src_l + src_r) / 2)))
    half_side = max(2.0 * eye_dist_src, 1.8 * e2m) * looseness  # FFHQ's |x|
    assert float(np.hypot(*(out_r - out_l))) == pytest.approx(size / 2 * eye_dist_src / half_side, rel=1e-6)
    assert abs((out_l[0] + out_r[0]) / 2 - (size - 1) / 2) < 0.02 * size

    # The aligned picture itself: detect again, eyes level within 1 degree and where predicted.
    again = aligner.detect(face.image)
    assert again, "no face found in the aligned image"
    det_l, det_r = eye_centres(again[0].landmarks)
    assert abs(angle(det_l, det_r)) < 1.0
    assert np.hypot(*(det_l - out_l)) < 3.0 and np.hypot(*(det_r - out_r)) < 3.0
    # A tight crop of the full photo: nothing fell outside it.
    if looseness == 1.0:
        assert not face.mask.any()


def _in_picture_area(inverse: np.ndarray, size: int, width: int, height: int) -> tuple[float, float]:
    """Area (and perimeter) of the source picture mapped into the output square, by polygon clipping."""
    forward = cv2.invertAffineTransform(inverse)
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    mapped = (corners @ forward[:, :2].T + forward[:, 2]).astype(np.float32)
    square = np.array(
        [[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]], np.float32
    )
    area, poly = cv2.intersectConvexConvex(mapped, square)
    return float(area), float(cv2.arcLength(poly, True))


@pytest.mark.parametrize(("crop", "looseness"), [((60, 150), 1.5), ((0, 0), 2.5)])
def test_mask_covers_exactly_the_out_of_picture_area(
    aligner: Aligner, crop: tuple[int, int], looseness: float
) -> None:
    top, left = crop
    photo = np.ascontiguousarray(astronaut()[top:, left:])
    h, w = photo.shape[:2]
    size = 512
    [face] = aligner.align(photo, AlignParams(output_size=size, looseness=looseness))
    masked = face.mask > 0
    assert masked.any() and not masked.all()
    # Geometry: the outside area is the square minus the picture's (clipped) image.
    inverse = quad_inverse_matrix(face.quad, size)
    inside_area, perimeter = _in_picture_area(inverse, size, w, h)
    assert abs(int((~masked).sum()) - inside_area) <= perimeter / 2 + 4
    # An independent rendering: warp a white picture with a black border, nearest neighbour.
    white = np.full((h, w), 255, np.uint8)
    rendered = cv2.warpAffine(
        white, inverse, (size, size), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0
    )
    disagree = (rendered == 0) != masked
    assert disagree.sum() <= perimeter  # only along the picture's edge
    # Masked pixels are blank; unmasked ones carry the photo.
    assert face.image[masked].max() == 0
    assert face.image[~masked].mean() > 40


def test_telea_fills_the_mask_and_keeps_the_rest(aligner: Aligner) -> None:
    photo = np.ascontiguousarray(astronaut()[60:, 150:])
    params = AlignParams(output_size=512, looseness=1.5)
    [plain] = aligner.align(photo, params)
    [filled] = aligner.align(photo, AlignParams(output_size=512, looseness=1.5, inpaint=True))
    assert filled.inpainted_with == "telea" and plain.inpainted_with is None
    masked = filled.mask > 0
    assert np.array_equal(filled.image[~masked], plain.image[~masked])
    # The blank area is gone: filled pixels look like the neighbouring picture, not black.
    assert filled.image[masked].mean() > 60
    assert (filled.image[masked].max(axis=1) == 0).mean() < 0.001
    with pytest.raises(FailedPrecondition, match="GANFOLK_ALIGN_LAMA_CHECKPOINT"):
        aligner.inpaint(plain.image, plain.mask, "lama")
    with pytest.raises(ValueError, match="same size"):
        aligner.inpaint(plain.image, plain.mask[:100], "telea")


class _FakeLama(torch.nn.Module):
    """The big-lama.pt interface: image (1,3,H,W) in [0,1], mask (1,1,H,W) -> image; H, W % 8 == 0."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        torch._assert(image.shape[2] % 8 == 0 and image.shape[3] % 8 == 0, "H and W must be multiples of 8")
        torch._assert(mask.shape[1] == 1, "mask must have one channel")
        fill = torch.tensor([0.25, 0.5, 0.75]).view(1, 3, 1, 1)
        return image * (1 - mask) + fill * mask


def write_fake_lama(folder: Path) -> Path:
    path = folder / "big-lama.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_FakeLama()), str(path))
    return path


def test_lama_torchscript_is_used_when_configured(tmp_path: Path) -> None:
    path = write_fake_lama(tmp_path)
    settings = load_settings(
        AlignSettings,
        align_lama_checkpoint=str(path),
        align_lama_checkpoint_sha256=file_sha256(path),
        device="cpu",
    )
    aligner = load_aligner(settings)
    assert isinstance(aligner.lama, LamaInpainter)
    image = np.ascontiguousarray(astronaut()[:101, :75])  # not multiples of 8: padded and cropped back
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[10:40, 20:50] = 255
    out, used = aligner.inpaint(image, mask, "auto")
    assert used == "lama" and out.shape == image.shape
    assert (out[10:40, 20:50] == [64, 128, 191]).all()
    keep = mask == 0
    assert np.array_equal(out[keep], image[keep])
    # Telea still on request.
    _, used = aligner.inpaint(image, mask, "telea")
    assert used == "telea"
    with pytest.raises(ValueError, match="sha256"):
        load_aligner(
            load_settings(
                AlignSettings, align_lama_checkpoint=str(path), align_lama_checkpoint_sha256="0" * 64
            )
        )
    bad = tmp_path / "not-lama.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="TorchScript"):
        load_aligner(load_settings(AlignSettings, align_lama_checkpoint=str(bad)))


def test_no_face_corrupt_and_oversized_images_give_clear_errors(aligner: Aligner) -> None:
    with pytest.raises(NotFound, match="no face found"):
        aligner.align_or_raise(no_face(), AlignParams())
    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"this is not a picture at all", 40_000_000)
    with pytest.raises(ValueError, match="corrupt image"):
        decode_image(corrupt_png(), 40_000_000)
    # 20,000 x 20,000 = 400 MP: refused from the header, nothing is allocated.
    with pytest.raises(ValueError, match=r"decompression bomb|over the limit"):
        decode_image(png_header_only(20_000, 20_000), 40_000_000)
    with pytest.raises(ValueError, match="over the limit"):
        decode_image(png_header_only(8_000, 6_000), 40_000_000)


def _dataset(folder: Path) -> None:
    folder.mkdir()
    photo = astronaut()
    (folder / "a-astronaut.png").write_bytes(encode(photo))
    (folder / "b-astronaut-crop.jpg").write_bytes(encode(np.ascontiguousarray(photo[60:, 150:]), "JPEG"))
    (folder / "c-bomb.png").write_bytes(png_header_only(20_000, 20_000))
    (folder / "d-coffee.png").write_bytes(encode(no_face()))
    (folder / "e-corrupt.png").write_bytes(corrupt_png())
    (folder / "f-notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(encode(photo))


class Crash(Exception):
    pass


def test_prepare_dataset_skips_records_and_resumes(
    aligner: Aligner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "raw"
    _dataset(source)
    store = LocalStore(tmp_path / "objects")
    calls: list[int] = []
    real_align = aligner.align

    def counting_align(image: np.ndarray, params: AlignParams) -> Any:
        calls.append(image.shape[1])
        return real_align(image, params)

    monkeypatch.setattr(aligner, "align", counting_align)
    params = AlignParams(output_size=512, looseness=1.5, inpaint=True)
    roots = [str(tmp_path)]
    seen: list[Progress] = []

    def crash_after_two(p: Progress) -> None:
        seen.append(p)
        if p.processed + p.skipped == 2:
            raise Crash()

    with pytest.raises(Crash):
        prepare_dataset(
            aligner, store, str(source), "sets/v1", params, 40_000_000, crash_after_two, local_roots=roots
        )
    assert calls == [512, 362]  # the two astronaut photos
    assert [p.current for p in seen] == ["a-astronaut.png", "b-astronaut-crop.jpg"]

    calls.clear()
    seen.clear()
    final = prepare_dataset(
        aligner, store, f"file://{source}", "sets/v1", params, 40_000_000, seen.append, local_roots=roots
    )
    assert calls == [600], "only the coffee photo is new work: finished files are not redone"
    assert (final.total, final.processed, final.skipped, final.done) == (6, 2, 4, True)
    assert [p.processed + p.skipped for p in seen[:-1]] == [1, 2, 3, 4, 5, 6] and seen[-1].done

    manifest = json.loads(store.get("sets/v1/manifest.json"))
    assert final.manifest_uri == store.uri("sets/v1/manifest.json")
    assert [f["source"] for f in manifest["files"]] == ["a-astronaut.png", "b-astronaut-crop.jpg"]
    reasons = {s["source"]: s["reason"] for s in manifest["skipped_files"]}
    assert set(reasons) == {"c-bomb.png", "d-coffee.png", "e-corrupt.png", "f-notes.txt"}
    assert "decompression bomb" in reasons["c-bomb.png"] or "over the limit" in reasons["c-bomb.png"]
    assert "no face" in reasons["d-coffee.png"]
    assert "corrupt" in reasons["e-corrupt.png"] and "not an image" in reasons["f-notes.txt"]
    assert manifest["fallbacks"] == ["opencv-telea"]
    crop = manifest["files"][1]["faces"][0]
    assert len(crop["landmarks"]) == 68 and crop["masked_fraction"] > 0 and crop["inpainted_with"] == "telea"
    aligned = decode_image(store.get_uri(crop["image"], crop["sha256"]), 10**7)
    assert aligned.size == (512, 512)

    calls.clear()
    again = prepare_dataset(aligner, store, str(source), "sets/v1", params, 40_000_000, local_roots=roots)
    assert calls == [] and (again.processed, again.skipped) == (2, 4)


def test_prepare_dataset_from_a_store_prefix(aligner: Aligner, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    store.put("raw/one.png", encode(astronaut()))
    store.put("raw/sub/two.png", encode(no_face()))
    # The destination lies under the source prefix: its outputs are never read back as inputs.
    final = prepare_dataset(aligner, store, store.uri("raw"), "raw/aligned", AlignParams(), 40_000_000)
    assert (final.total, final.processed, final.skipped) == (2, 1, 1)
    final = prepare_dataset(
        aligner, store, str(tmp_path / "objects" / "raw"), "raw/aligned", AlignParams(), 10**8
    )
    assert (final.total, final.processed, final.skipped) == (2, 1, 1)
    with pytest.raises(ValueError, match="not in this service's object store"):
        prepare_dataset(aligner, store, "s3://elsewhere/raw", "out", AlignParams(), 10**8)
    with pytest.raises(NotFound, match="source folder not found"):
        prepare_dataset(
            aligner,
            store,
            str(tmp_path / "missing"),
            "out",
            AlignParams(),
            10**8,
            local_roots=[str(tmp_path)],
        )
    # No roots configured: no folder outside the store is read, not even to say it is missing.
    for outside in (str(tmp_path / "missing"), str(tmp_path), "file:///", "/etc"):
        with pytest.raises(ValueError, match="GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS is not set"):
            prepare_dataset(aligner, store, outside, "out", AlignParams(), 10**8)
    # Local folders are confined to configured roots.
    roots = [str(tmp_path / "objects")]
    final = prepare_dataset(
        aligner, store, str(tmp_path / "objects/raw"), "raw/aligned", AlignParams(), 10**8, local_roots=roots
    )
    assert final.total == 2
    with pytest.raises(ValueError, match="GANFOLK_ALIGN_LOCAL_SOURCE_ROOTS"):
        prepare_dataset(aligner, store, str(tmp_path), "o3", AlignParams(), 10**8, local_roots=roots)
    with pytest.raises(ValueError, match="outside the folders"):
        prepare_dataset(aligner, store, f"file://{tmp_path}/", "o3", AlignParams(), 10**8, local_roots=roots)


@pytest.mark.parametrize("level_eyes", [True, False])
def test_quad_geometry_on_synthetic_landmarks(level_eyes: bool) -> None:
    """A symmetric face turned by 10 degrees: both FFHQ's quad and the eye-line quad undo the turn."""
    from services.align.core import face_quad

    lm = np.zeros((68, 2))
    lm[36:42] = [-30.0, 0.0]  # left eye centre
    lm[42:48] = [30.0, 0.0]  # right eye centre
    lm[48], lm[54] = [-20.0, 70.0], [20.0, 70.0]  # mouth corners
    theta = math.radians(10)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    lm = lm @ rot.T + [300.0, 200.0]
    quad = face_quad(lm, looseness=1.5, level_eyes=level_eyes)
    top = quad[3] - quad[0]
    assert math.degrees(math.atan2(top[1], top[0])) == pytest.approx(10.0, abs=1e-6)
    # FFHQ's size: |x| = max(2 * eye distance, 1.8 * eye-to-mouth) = max(120, 126) = 126, times looseness.
    assert float(np.hypot(*top)) == pytest.approx(2 * 126 * 1.5)
    centre = quad.mean(0)
    assert np.allclose(centre, np.array([0.0, 7.0]) @ rot.T + [300.0, 200.0])
