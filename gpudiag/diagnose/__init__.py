"""Diagnosis from a report alone: the recommendation, its verdicts and environment changes, and the
preflight go / no-go checks. Pure rules: nothing here measures, and nothing imports torch."""
