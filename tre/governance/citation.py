"""The acknowledgement every output derived from NHS patient data must carry."""

PATIENT_DATA_CITATION = (
    "This work uses data provided by patients and collected by the NHS as part of their care and support."
)
