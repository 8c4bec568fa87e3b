"""Settings of the alignment / inpainting service (GANFOLK_ALIGN_*)."""

from __future__ import annotations

from ganfolk.runtime.settings import Settings


class AlignSettings(Settings):
    # dlib 68-point shape predictor (.dat). Unset: found on disk in the face_recognition_models
    # package's models/ folder or Debian's libdlib-data (/usr/share/dlib).
    align_landmarks_model: str | None = None
    # dlib CNN face detector (mmod_human_face_detector.dat), located the same way; optional.
    align_cnn_detector_model: str | None = None
    # LaMa TorchScript (big-lama.pt interface: image, mask -> image); path, file:// or s3:// URI.
    # Unset: OpenCV Telea inpainting, named "opencv-telea" in provenance.
    align_lama_checkpoint: str | None = None
    align_lama_checkpoint_sha256: str | None = None
    # Defaults of requests that leave them unset.
    align_output_size: int = 512
    # Crop scale relative to FFHQ's (1.0 = FFHQ); the article cropped looser to keep the whole head.
    align_looseness: float = 1.3
    # Detection runs on a copy whose longer side is at most this, upsampling included
    # (landmarks use full resolution).
    align_detect_max_side: int = 1024
    # Image pyramid upsamplings for the detectors (1 finds faces down to ~40 px); applied only
    # while the upsampled image stays within align_detect_max_side.
    align_hog_upsample: int = 1
    align_cnn_upsample: int = 0
    # Telea neighbourhood radius in pixels.
    align_telea_radius: int = 3
    # Most files one PrepareDataset request may list.
    align_max_dataset_files: int = 100_000
    # Direct gRPC calls that name no output_prefix write under direct/<this>/<random hex>.
    align_output_prefix: str = "aligned"
    # Comma-separated folders that PrepareDataset may read local sources from (a folder path or
    # file:// URI must lie under one, and so must the target of a linked file). Empty: no folder
    # outside a local store's own; sources come from the object store (s3://bucket/prefix).
    align_local_source_roots: str = ""

    def local_source_roots(self) -> list[str]:
        return [r.strip() for r in self.align_local_source_roots.split(",") if r.strip()]
