"""The hardening audit's later sections (9-12) and what they share with benchmarks/hardening_audit.py."""
