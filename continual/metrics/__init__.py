"""Evaluation passes and the report card (definitions: FIELD_GUIDE section 4)."""
