"""DICOM pixels (rescale, window, MONOCHROME1) and DICOM files in manifests and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from primia.data import Task, load_image_folder, open_dataset
from primia.data.dicom import dicom_patient_id, load_dicom_folder, read_dicom, read_radiograph
from primia.errors import DataError

# Stored values 0..255 along each row, so column j holds the value j; square, so that reading
# it at size 256 neither resizes nor crops.
RAMP = np.tile(np.arange(256, dtype=np.uint16), (256, 1))


def write_dicom(
    path: Path,
    pixels: np.ndarray = RAMP,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[object, object] | None = None,
    rescale: tuple[float, float] | None = None,
    patient_id: str | None = "P1",
) -> Path:
    """An uncompressed single-frame DICOM file with a file meta header."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if patient_id is not None:
        dataset.PatientID = patient_id
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = 16
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    dataset.save_as(path, enforce_file_format=True)
    return path


def _columns(out: np.ndarray) -> np.ndarray:
    """The first row of a read RAMP: one value per stored value (size 256, no resize)."""
    return out[0].astype(int)


def test_monochrome2_without_window_is_min_max(tmp_path: Path) -> None:
    out = read_dicom(write_dicom(tmp_path / "a.dcm", RAMP * 4 + 100), 256)
    assert out.dtype == np.uint8
    assert out.shape == (256, 256)
    row = _columns(out)
    assert row[0] == 0
    assert row[-1] == 255
    assert np.all(np.diff(row) >= 0)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    plain = read_dicom(write_dicom(tmp_path / "m2.dcm"), 256)
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1"), 256)
    row = _columns(inverted)
    assert row[0] == 255
    assert row[-1] == 0
    assert np.all(np.diff(row) <= 0)
    np.testing.assert_array_equal(plain.astype(int) + inverted.astype(int), 255)


def test_window_clips_outside_and_ramps_inside(tmp_path: Path) -> None:
    row = _columns(read_dicom(write_dicom(tmp_path / "w.dcm", window=(100, 51)), 256))
    # DICOM's LINEAR window, center 100, width 51: ((x - 99.5) / 50 + 0.5) clipped to [0, 1],
    # so 74 and below are black, 125 and above white, and 100 maps to 0.51 * 255.
    assert np.all(row[:75] == 0)
    assert np.all(row[125:] == 255)
    assert row[100] == 130
    assert np.all(np.diff(row[75:125]) > 0)


def test_window_with_monochrome1_is_inverted(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w1.dcm", window=(100, 51), photometric="MONOCHROME1")
    row = _columns(read_dicom(path, 256))
    assert np.all(row[:75] == 255)
    assert np.all(row[125:] == 0)


def test_first_of_several_windows_is_used(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "ww.dcm", window=([100, 5000], [51, 10]))
    row = _columns(read_dicom(path, 256))
    assert row[74] == 0
    assert row[125] == 255


def test_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    # Rescaled values are stored + 1000; a window at 1100 only makes sense after the rescale.
    path = write_dicom(tmp_path / "r.dcm", window=(1100.5, 1), rescale=(1.0, 1000.0))
    row = _columns(read_dicom(path, 256))
    assert np.all(row[:100] == 0)
    assert np.all(row[101:] == 255)


def test_invalid_window_width_falls_back_to_min_max(tmp_path: Path) -> None:
    row = _columns(read_dicom(write_dicom(tmp_path / "z.dcm", window=(100, 0)), 256))
    assert row[0] == 0
    assert row[-1] == 255
    assert 100 < row[128] < 155


def test_resize_to_the_requested_size(tmp_path: Path) -> None:
    assert read_dicom(write_dicom(tmp_path / "s.dcm"), 16).shape == (16, 16)


def test_missing_dicom_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*gone\.dcm"):
        read_dicom(tmp_path / "gone.dcm", 16)


def test_non_dicom_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"\0" * 300)
    with pytest.raises(DataError, match=r"fake\.dcm is not a DICOM file"):
        read_dicom(path, 16)


def test_colour_dicom_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "rgb.dcm", photometric="RGB")
    with pytest.raises(DataError, match=r"rgb\.dcm has PhotometricInterpretation RGB"):
        read_dicom(path, 16)


def test_dicom_without_pixels_is_a_data_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "np.dcm")
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path)
    with pytest.raises(DataError, match=r"np\.dcm holds no image .*leave it out"):
        read_dicom(path, 16)


def test_patient_id_tag(tmp_path: Path) -> None:
    assert dicom_patient_id(write_dicom(tmp_path / "p.dcm", patient_id=" X7 ")) == "X7"
    assert dicom_patient_id(write_dicom(tmp_path / "q.dcm", patient_id=None)) == ""


def test_reader_is_chosen_by_extension(tmp_path: Path) -> None:
    dicom = read_radiograph(write_dicom(tmp_path / "a.DCM", photometric="MONOCHROME1"), 256)
    assert dicom[0, 0] == 255
    Image.fromarray(np.full((16, 16), 7, dtype=np.uint8)).save(tmp_path / "b.png")
    assert np.all(read_radiograph(tmp_path / "b.png", 16) == 7)


def _dicom_set(root: Path) -> None:
    """Four DICOM files of patients A and B (by tag) and a manifest without patient_id."""
    root.mkdir(exist_ok=True)
    for index, patient in enumerate("AABB"):
        write_dicom(root / f"im{index}.dcm", patient_id=patient)
    (root / "manifest.csv").write_text(
        "path,pneumonia\nim0.dcm,1\nim1.dcm,0\nim2.dcm,0\nim3.dcm,1\n"
    )


def test_dicom_folder_takes_patients_from_tags(tmp_path: Path) -> None:
    _dicom_set(tmp_path / "set")
    dataset = load_dicom_folder(tmp_path / "set", image_size=16)
    assert dataset.task is Task.BINARY
    assert dataset.patient_ids == ["A", "A", "B", "B"]
    assert dataset.targets()[:, 0].tolist() == [1, 0, 0, 1]
    image, target = dataset[0]
    assert tuple(image.shape) == (1, 16, 16)
    assert target.tolist() == [1.0]


def test_manifest_patient_id_wins_over_the_tag(tmp_path: Path) -> None:
    _dicom_set(tmp_path)
    (tmp_path / "manifest.csv").write_text(
        "path,patient_id,pneumonia\nim0.dcm,p0,1\nim1.dcm,,0\nim2.dcm,p2,0\nim3.dcm,p3,1\n"
    )
    dataset = open_dataset(tmp_path, image_size=16)
    assert dataset.patient_ids == ["p0", "A", "p2", "p3"]


def test_labels_csv_elsewhere_resolves_paths_against_the_folder(tmp_path: Path) -> None:
    _dicom_set(tmp_path / "images")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,finding\nim0.dcm,a\nim1.dcm,b\n")
    dataset = load_dicom_folder(
        tmp_path / "images", image_size=16, labels_csv=labels, label_columns=["finding"]
    )
    assert dataset.task is Task.MULTICLASS
    assert dataset.label_names == ("a", "b")


def test_dicom_folder_without_labels_csv(tmp_path: Path) -> None:
    write_dicom(tmp_path / "im.dcm")
    with pytest.raises(DataError, match=r"no labels CSV at .*manifest\.csv"):
        load_dicom_folder(tmp_path, image_size=16)


def test_dicom_row_without_any_patient_id(tmp_path: Path) -> None:
    write_dicom(tmp_path / "anon.dcm", patient_id=None)
    write_dicom(tmp_path / "b.dcm")
    (tmp_path / "manifest.csv").write_text("path,pneumonia\nb.dcm,0\nanon.dcm,1\n")
    with pytest.raises(DataError, match=r"row 3: no patient_id and .*anon\.dcm has no PatientID"):
        load_dicom_folder(tmp_path, image_size=16)


def test_class_folders_of_dicom_files(tmp_path: Path) -> None:
    for name, patient in (("NORMAL", "N1"), ("PNEUMONIA", "S1")):
        (tmp_path / name).mkdir()
        write_dicom(tmp_path / name / "x.dcm", patient_id=patient)
    write_dicom(tmp_path / "NORMAL" / "y.dcm", patient_id=None)  # no tag: the file stem
    dataset = load_image_folder(tmp_path, image_size=16)
    assert dataset.patient_ids == ["N1", "y", "S1"]
    assert [r.patient_from_file for r in dataset.records] == [False, True, False]
    assert dataset.targets().tolist() == [0, 0, 1]
    assert dataset.image(0).shape == (16, 16)
