"""Knative Eventing on one machine: CloudEvents over HTTP, Trigger filters, delivery, the broker."""
