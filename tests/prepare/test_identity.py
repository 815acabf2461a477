"""Patient identity in folder names never reaches ``source_path`` or ``failures.csv``."""

from __future__ import annotations

from pathlib import Path

from support.synthetic_dicom import write_series

from radlens.io.phi import load_phi_key
from radlens.prepare.identity import PatientTree
from radlens.prepare.importers.dicom import pseudonym
from radlens.prepare.pipeline import prepare_dataset


def test_patient_folders_and_identifying_names_are_replaced() -> None:
    tree = PatientTree()
    tree.add("export/DOE^JOHN/CT_2024-01-02/s1", "pA", {"doe", "john", "20240102"})
    tree.add("export/DOE^JOHN/CT_2024-01-02/s2", "pA", {"doe", "john", "20240102"})
    tree.add("export/ROE^JANE/MRI", "pB", {"roe", "jane"})
    assert tree.series_path("export/DOE^JOHN/CT_2024-01-02/s1", "pA") == "export/pA/CT_*/s1"  # the date, as 20240102
    assert tree.series_path("export/ROE^JANE/MRI", "pB") == "export/pB/MRI"
    # Files that could not be read: under a known patient folder, or in a folder beside them (a patient
    # whose every file failed); elsewhere the path stays.
    assert tree.failure_path("export/ROE^JANE/MRI/junk.dcm") == "export/pB/MRI/junk.dcm"
    assert tree.failure_path("export/SMITH^ANNA/x/y.dcm") == "export/*/x/y.dcm"
    assert tree.failure_path("README.txt") == "README.txt"


def test_a_single_patient_tree_hides_its_folder() -> None:
    tree = PatientTree()
    tree.add("DOE_JOHN/t1", "pA", {"doe", "john"})
    assert tree.series_path("DOE_JOHN/t1", "pA") == "pA/t1"
    flat = PatientTree()  # several patients in one folder: no folder is a patient's; names still go
    flat.add("incoming", "pA", {"mrn1"})
    flat.add("incoming", "pB", {"mrn2"})
    assert flat.series_path("incoming", "pA") == "incoming"
    assert flat.failure_path("incoming/MRN-2_scan.dcm") == "incoming/MRN-2_scan.dcm"  # unreadable: no tags known


def test_dicom_tree_with_patient_names_in_folders(tmp_path: Path) -> None:
    root = tmp_path / "pacs"
    doe = {"PatientName": "Doe^John", "PatientID": "MRN-1", "StudyDate": "20240102"}
    write_series(root / "DOE_JOHN" / "2024-01-02_MR" / "t2", tags=doe)
    write_series(root / "DOE_JOHN" / "2024-01-02_MR" / "t1", tags=doe, seed=1)
    write_series(root / "ROE^JANE" / "MRI" / "s1", tags={"PatientName": "Roe^Jane", "PatientID": "MRN-2"})
    (root / "ROE^JANE" / "MRI" / "broken.dcm").write_bytes(b"not dicom")
    (root / "SMITH_ANNA").mkdir()
    (root / "SMITH_ANNA" / "notes.dcm").write_bytes(b"not dicom either")
    ds = prepare_dataset("dicom", root, tmp_path / "out")
    key = load_phi_key()
    doe_p, roe_p = pseudonym("p", "MRN-1", key), pseudonym("p", "MRN-2", key)
    assert sorted(ds.series["source_path"]) == sorted([f"{doe_p}/*_MR/t1", f"{doe_p}/*_MR/t2", f"{roe_p}/MRI/s1"])
    assert sorted(ds.failures["path"]) == sorted([f"{roe_p}/MRI/broken.dcm", "*/notes.dcm"])
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".npy").lower()
    for identity in (b"doe", b"john", b"roe", b"jane", b"smith", b"anna", b"mrn-", b"20240102", b"2024-01-02"):
        assert identity not in written, identity
