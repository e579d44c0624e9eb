"""gRPC service, health, reflection, metrics and the process model."""
