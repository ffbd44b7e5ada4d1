"""The commands that call one running server: `status` and `call`."""
