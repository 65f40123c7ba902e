"""DICOM Segmentation (SEG) export of a predicted mask with highdicom.

The SEG references its source image (same study, patient and frame), so a
PACS or viewer can show it over the X-ray. ``deidentify=True`` writes a SEG
whose patient module is blanked, for sharing outside the care team.
"""
from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pydicom

from pneumo import __version__
from pneumo.errors import UnsupportedDicomError

#: SNOMED CT 36118008 |Pneumothorax (disorder)|
PNEUMOTHORAX_CODE = ("36118008", "SCT", "Pneumothorax")
_PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                 "OtherPatientIDs", "PatientAddress", "ReferringPhysicianName",
                 "InstitutionName")


def deidentified_copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Copy of ``ds`` with patient-identifying attributes blanked (UIDs kept)."""
    out = copy.deepcopy(ds)
    for keyword in _PHI_KEYWORDS:
        if keyword in out:
            setattr(out, keyword, "ANONYMOUS" if keyword == "PatientName" else "")
    out.PatientIdentityRemoved = "YES"
    return out


def make_seg(source: bytes | pydicom.Dataset, mask: np.ndarray, model_name: str,
             deidentify: bool = False) -> bytes:
    """Encode ``mask`` (bool, rows x columns of the source) as a binary DICOM SEG.

    Args:
        source: the uploaded DICOM (bytes) or its dataset.
        mask: prediction at the source image's resolution.
        model_name: recorded as the algorithm name.
        deidentify: blank patient name, ID, birth date and accession number.

    Returns:
        The SEG file as bytes.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(io.BytesIO(source))
        if deidentify:
            ds = deidentified_copy(ds)
        if mask.shape != (int(ds.Rows), int(ds.Columns)):
            raise UnsupportedDicomError(
                f"Mask shape {mask.shape} does not match the source image "
                f"{int(ds.Rows)} x {int(ds.Columns)}.")
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1.0, 1.0]
        description = hd.seg.SegmentDescription(
            segment_number=1,
            segment_label="Pneumothorax",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=Code(*PNEUMOTHORAX_CODE),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=model_name[:64], version=__version__,
                family=codes.cid7162.ArtificialIntelligence),
        )
        seg = hd.seg.Segmentation(
            source_images=[ds],
            pixel_array=mask.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="pneumo",
            manufacturer_model_name=model_name[:64],
            software_versions=__version__,
            device_serial_number="0",
            series_description="Pneumothorax (AI, decision support)",
            # Projection radiographs have no slice thickness; the SEG IOD needs one
            # when a frame of reference is present, so a nominal 1 mm is written.
            pixel_measures=hd.PixelMeasuresSequence(
                pixel_spacing=[float(v) for v in spacing], slice_thickness=1.0),
        )
        buf = io.BytesIO()
        seg.save_as(buf)
    return buf.getvalue()
