"""The report document: its contract and JSON Schema, assembly and safe load/save (contract.py),
and the redaction every output passes through (redact.py)."""
