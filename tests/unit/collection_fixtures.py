"""Small copies of the public collections' layouts, written by the tests.

Headers and value conventions follow each collection's documentation; images are tiny
generated PNGs, JPEGs and DICOM files. Each writer covers its collection's quirks: NIH's
``|`` lists and trailing header comma, CheXpert's −1 and blank cells and lateral views,
MIMIC's three joined (and gzipped) CSVs, VinDr's three votes per image, RSNA's several box
rows per image, and one missing image where the collection has a gap to skip.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

SIZE = 16


def write_image(path: Path, value: int = 100) -> Path:
    """A grey image in the format its suffix names (PNG, JPEG), wider than high."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE, SIZE + 4), value, dtype=np.uint8)).save(path)
    return path


def write_dx(
    path: Path, *, patient: str = "", sex: str = "", age: str = "", view: str = "PA"
) -> Path:
    """An uncompressed DX DICOM radiograph with the subgroup tags the collections carry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientID = patient
    dataset.PatientSex = sex
    with warnings.catch_warnings():
        # RSNA's files store PatientAge as "51", not DICOM's "051Y"; pydicom warns.
        warnings.simplefilter("ignore", UserWarning)
        dataset.PatientAge = age
    dataset.ViewPosition = view
    dataset.Rows = dataset.Columns = SIZE
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = np.arange(SIZE * SIZE, dtype=np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
# Patient 1 has three images (one AP), patient 2 two; 3-6 one each; 00000006_000 is missing.
NIH_ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, 58, "M", "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA"),
    ("00000001_002.png", "Cardiomegaly|Effusion", 2, 1, 58, "M", "AP"),
    ("00000002_000.png", "No Finding", 0, 2, 81, "M", "PA"),
    ("00000002_001.png", "Pneumonia|Infiltration", 1, 2, 81, "M", "PA"),
    ("00000003_000.png", "Hernia", 0, 3, 74, "F", "PA"),
    ("00000004_000.png", "Mass|Nodule", 0, 4, 82, "M", "AP"),
    ("00000005_000.png", "No Finding", 0, 5, 69, "F", "PA"),
    ("00000006_000.png", "Pleural_Thickening", 0, 6, 33, "F", "PA"),
]
NIH_TEST = {"00000003_000.png", "00000004_000.png"}
NIH_MISSING = "00000006_000.png"


def write_nih(root: Path, *, lists: bool = True) -> Path:
    lines = [NIH_HEADER]
    for name, labels, follow_up, patient, age, sex, view in NIH_ROWS:
        lines.append(
            f"{name},{labels},{follow_up},{patient},{age},{sex},{view},2500,2048,0.143,0.143"
        )
        if name != NIH_MISSING:
            folder = "images_001" if patient < 3 else "images_002"
            write_image(root / folder / "images" / name)
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    if lists:
        names = [row[0] for row in NIH_ROWS]
        (root / "test_list.txt").write_text("\n".join(n for n in names if n in NIH_TEST) + "\n")
        (root / "train_val_list.txt").write_text(
            "\n".join(n for n in names if n not in NIH_TEST) + "\n"
        )
    return root


CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)


def _chexpert_row(path: str, sex: str, age: int, view: str, labels: dict[int, str]) -> str:
    frontal = "Lateral" if view == "" else "Frontal"
    cells = [labels.get(i, "") for i in range(14)]
    return ",".join([path, sex, str(age), frontal, view, *cells])


def write_chexpert(root: Path) -> Path:
    """``root/CheXpert-v1.0-small/{train,valid}.csv`` and their JPEGs; column index 2 is
    Cardiomegaly, 10 Pleural Effusion, 0 No Finding."""
    folder = root / "CheXpert-v1.0-small"
    train = [
        ("train/patient00001/study1/view1_frontal.jpg", "Female", 68, "AP", {0: "1.0"}),
        ("train/patient00002/study2/view1_frontal.jpg", "Female", 87, "AP", {2: "-1.0", 10: "1.0"}),
        ("train/patient00002/study2/view2_lateral.jpg", "Female", 87, "", {2: "-1.0", 10: "1.0"}),
        ("train/patient00002/study1/view1_frontal.jpg", "Female", 83, "PA", {2: "0.0", 10: "-1.0"}),
        ("train/patient00003/study1/view1_frontal.jpg", "Male", 41, "AP", {2: "1.0"}),
        ("train/patient00004/study1/view1_frontal.jpg", "Unknown", 20, "PA", {0: "1.0"}),
    ]
    valid = [
        ("valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "AP", {2: "1.0", 10: "0.0"}),
        ("valid/patient64542/study1/view1_frontal.jpg", "Male", 70, "PA", {0: "1.0"}),
    ]
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        lines = [CHEXPERT_HEADER] + [
            _chexpert_row(f"CheXpert-v1.0-small/{path}", *rest) for path, *rest in rows
        ]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("\n".join(lines) + "\n")
        for path, *_ in rows:
            write_image(folder / path)
    return root


MIMIC_LABELS_HEADER = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
    "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
    "Pneumothorax,Support Devices"
)


def write_mimic(root: Path) -> Path:
    """Three subjects; subject 10000001 has a PA and a LATERAL of one study; study 50000009
    has no label row; metadata gzipped as distributed."""
    metadata = [
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,"
        "Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,"
        "ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning",
        "aaa1,10000001,50000001,CHEST (PA AND LAT),PA,3056,2544,21800506,213014.531,"
        "CHEST (PA AND LAT),postero-anterior,Erect",
        "aaa2,10000001,50000001,CHEST (PA AND LAT),LATERAL,3056,2544,21800506,213014.531,"
        "CHEST (PA AND LAT),lateral,Erect",
        "bbb1,10000002,50000002,CHEST (PORTABLE AP),AP,2544,3056,21800507,1,x,antero-posterior,",
        "ccc1,10000003,50000003,CHEST (PA AND LAT),PA,3056,2544,21800508,1,x,postero-anterior,",
        "ccc2,10000003,50000009,CHEST (PA AND LAT),PA,3056,2544,21800509,1,x,postero-anterior,",
    ]
    labels = [
        MIMIC_LABELS_HEADER,
        "10000001,50000001,,1.0,,,,,,,,-1.0,,,,",
        "10000002,50000002,,,,,,,,,1.0,,,,,",
        "10000003,50000003,1.0,0.0,,,,,,,,1.0,,,,",
    ]
    split = [
        "dicom_id,study_id,subject_id,split",
        "aaa1,50000001,10000001,train",
        "aaa2,50000001,10000001,train",
        "bbb1,50000002,10000002,validate",
        "ccc1,50000003,10000003,test",
        "ccc2,50000009,10000003,test",
    ]
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        handle.write("\n".join(metadata) + "\n")
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text("\n".join(labels) + "\n")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(split) + "\n")
    (root / "patients.csv").write_text(
        "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n"
        "10000001,F,52,2180,2014 - 2016,\n10000002,M,76,2180,2014 - 2016,\n"
    )
    for line in metadata[1:]:
        dicom_id, subject, study = line.split(",")[:3]
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg"
        write_image(path)
    return root


VINDR_FINDINGS = [
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Lung cavity",
    "Lung cyst",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
    "COPD",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
    "Other diseases",
    "No finding",
]


def _votes(*positive: str) -> str:
    return ",".join("1" if name in positive else "0" for name in VINDR_FINDINGS)


def write_vindr(root: Path) -> Path:
    """Train image t1: cardiomegaly by 3 of 3, effusion by 1 of 3; t2: nodule by 2 of 3;
    t3, t4: no finding; test image s1: pneumonia (consensus row)."""
    train = [
        "image_id,rad_id," + ",".join(VINDR_FINDINGS),
        "t1,R8," + _votes("Cardiomegaly", "Pleural effusion"),
        "t1,R9," + _votes("Cardiomegaly"),
        "t1,R10," + _votes("Cardiomegaly"),
        "t2,R1," + _votes("Nodule/Mass"),
        "t2,R2," + _votes("Nodule/Mass"),
        "t2,R3," + _votes("No finding"),
        "t3,R1," + _votes("No finding"),
        "t3,R4," + _votes("No finding"),
        "t3,R5," + _votes("No finding"),
        "t4,R1," + _votes("No finding"),
        "t4,R4," + _votes("No finding"),
        "t4,R5," + _votes("No finding"),
    ]
    test = ["image_id," + ",".join(VINDR_FINDINGS), "s1," + _votes("Pneumonia")]
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_labels_train.csv").write_text("\n".join(train) + "\n")
    (root / "image_labels_test.csv").write_text("\n".join(test) + "\n")
    for image, sex, age in (
        ("t1", "F", "045Y"),
        ("t2", "M", "061Y"),
        ("t3", "M", ""),
        ("t4", "F", "030Y"),
    ):
        write_dx(root / "train" / f"{image}.dicom", sex=sex, age=age)
    write_dx(root / "test" / "s1.dicom", sex="O", age="070Y")
    return root


def write_rsna(root: Path) -> Path:
    """Image r1 has two boxes (two Target 1 rows), r2 and r3 none, r4 one box (AP)."""
    rows = [
        "patientId,x,y,width,height,Target",
        "r1,264.0,152.0,213.0,379.0,1",
        "r1,562.0,152.0,256.0,453.0,1",
        "r2,,,,,0",
        "r3,,,,,0",
        "r4,316.0,318.0,170.0,478.0,1",
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")
    for image, sex, age, view in (
        ("r1", "F", "51", "PA"),
        ("r2", "M", "48", "PA"),
        ("r3", "M", "19", "PA"),
        ("r4", "F", "75", "AP"),
    ):
        write_dx(
            root / "stage_2_train_images" / f"{image}.dcm",
            patient=image,
            sex=sex,
            age=age,
            view=view,
        )
    return root
