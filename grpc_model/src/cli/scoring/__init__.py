"""`grpc-model score`: many items through running servers, or through the model in this process, into a file."""
