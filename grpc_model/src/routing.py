"""How a ModzyModel call names the model it is for, when one server serves a repository of models.

ModzyModel's messages have no model field, so the name and version travel in call metadata, and a
call without them goes to the server's default model. The server and every client share these keys.
"""

MODEL_NAME_METADATA = "x-model-name"
MODEL_VERSION_METADATA = "x-model-version"
