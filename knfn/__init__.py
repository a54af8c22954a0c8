"""knfn: Knative Serving and Eventing on one machine."""
