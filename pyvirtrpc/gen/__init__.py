"""Modules generated from protocol/*.x by ``tools/regen``; do not edit them by hand."""
