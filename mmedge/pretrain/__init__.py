"""Pretraining objectives compared by compute: replaced word + replaced object detection (rwd-rod,
ELECTRA-style) against masked language modelling + masked object prediction (mlm-mop)."""
