"""Fault injection: outputs, signals, resource limits, the user's hostile step, redaction, hostile files.

Each file is one class of fault; the cases are examples of the class, and a larger corpus of
hostile inputs is kept outside the repository.
"""
