"""Running the model: `serve`, `ray-serve`, and `k8s` (the Kubernetes manifests, written from model.yaml)."""
