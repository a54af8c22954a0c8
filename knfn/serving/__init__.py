"""Knative Serving on one machine: revisions, traffic, the KPA, replicas and their templates.

Kept empty on purpose: a template process starts as ``python -m knfn.serving.template_main`` and
should import no more than it needs, and knfn/manifests.py imports modules of this package.
"""
