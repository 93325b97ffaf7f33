"""Segment-compatible event collector: decode, authenticate, validate, stamp, store."""
