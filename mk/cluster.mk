# Cluster path: build images, push them, deploy to Knative on Kubernetes.
# Included by the root Makefile (-include mk/cluster.mk). These targets need Docker, a cluster
# and (for `cluster`, `push`) the internet; none of them runs in CI. What CI checks offline
# instead (renders, schemas, annotations, hadolint) is `make test` (tests/manifests/).
#
#   make cluster                      kind + Knative Serving/Kourier + Eventing, then deploy dev
#   make images                       docker build one image per function, tag = git commit
#   make kind-load                    copy those images into the kind nodes (no registry needed)
#   make push REGISTRY=ghcr.io/you    tag and push them, print the digests for overlays/prod
#   make deploy OVERLAY=dev|prod      kubectl apply -k knative/overlays/$(OVERLAY)

CLUSTER_FUNCTIONS := hello ingest thumbnail catalog query event-display dead-letters minio-events
CLUSTER_NAME      ?= knfn
IMAGE_PREFIX      ?= knfn
IMAGE_TAG         ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
REGISTRY          ?=
OVERLAY           ?= dev
DOCKER            ?= docker
KIND              ?= kind
KUBECTL           ?= $(if $(wildcard .venv/bin/kubectl),.venv/bin/kubectl,kubectl)
DEPLOY_DIR        := build/deploy-$(OVERLAY)

.PHONY: images push kind-load deploy cluster render

images:
	@for f in $(CLUSTER_FUNCTIONS); do \
	  echo "== $(IMAGE_PREFIX)/$$f:$(IMAGE_TAG)"; \
	  $(DOCKER) build -f functions/Dockerfile --build-arg FUNCTION=$$f \
	    -t $(IMAGE_PREFIX)/$$f:$(IMAGE_TAG) . || exit 1; \
	done

push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=registry.example.com/team"; exit 2; }
	@for f in $(CLUSTER_FUNCTIONS); do \
	  $(DOCKER) tag $(IMAGE_PREFIX)/$$f:$(IMAGE_TAG) $(REGISTRY)/$$f:$(IMAGE_TAG) || exit 1; \
	  $(DOCKER) push $(REGISTRY)/$$f:$(IMAGE_TAG) || exit 1; \
	done
	@echo "# digests for knative/overlays/prod/kustomization.yaml (images:)"
	@for f in $(CLUSTER_FUNCTIONS); do \
	  $(DOCKER) inspect --format '{{index .RepoDigests 0}}' $(REGISTRY)/$$f:$(IMAGE_TAG); \
	done

# Knative skips tag-to-digest resolution for dev.local/ images, so kind-loaded images work.
kind-load:
	@for f in $(CLUSTER_FUNCTIONS); do \
	  $(DOCKER) tag $(IMAGE_PREFIX)/$$f:$(IMAGE_TAG) dev.local/knfn/$$f:$(IMAGE_TAG) || exit 1; \
	  $(KIND) load docker-image --name $(CLUSTER_NAME) dev.local/knfn/$$f:$(IMAGE_TAG) || exit 1; \
	done

# dev: a throwaway kustomization on top of the overlay swaps the image tag "dev" for the tag
# just built, so each commit makes new Knative Revisions. prod: applied as committed (digests).
# A Job's pod template cannot change in place, so finished admin Jobs are deleted first; they
# are idempotent and run again with the new image.
ADMIN_JOBS := migrate buckets minio-bucket-setup

deploy:
	$(KUBECTL) delete job --namespace default --ignore-not-found $(ADMIN_JOBS)
ifeq ($(OVERLAY),dev)
	@mkdir -p $(DEPLOY_DIR)
	@{ echo "apiVersion: kustomize.config.k8s.io/v1beta1"; \
	   echo "kind: Kustomization"; \
	   echo "resources: [../../knative/overlays/dev]"; \
	   echo "images:"; \
	   for f in $(CLUSTER_FUNCTIONS); do \
	     echo "  - {name: dev.local/knfn/$$f, newTag: \"$(IMAGE_TAG)\"}"; \
	   done; } > $(DEPLOY_DIR)/kustomization.yaml
	$(KUBECTL) apply -k $(DEPLOY_DIR)
else
	$(KUBECTL) apply -k knative/overlays/$(OVERLAY)
endif

# Print what `deploy` would apply, without a cluster.
render:
	$(KUBECTL) kustomize knative/overlays/$(OVERLAY)

cluster:
	CLUSTER_NAME=$(CLUSTER_NAME) KUBECTL=$(KUBECTL) bash scripts/cluster.sh
