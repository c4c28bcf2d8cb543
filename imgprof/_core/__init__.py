"""Shared internals: validation, provenance, feature anatomy and grouped kernels.

Everything here is private API used by all public namespaces; nothing here
imports heavy optional dependencies.
"""
