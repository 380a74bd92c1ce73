"""Tests of the content-addressed store, blob transfer and network-name checks."""
