"""Many models in one server: the models of a repository directory, and the registry that routes calls to them."""
