"""The author's commands: `init`, `new`, `new-version`, `validate`, `version`, `test` and `build`.

Everything that makes, checks and packages a model: the skeleton and its templates, a project of its own,
the test run, the container engine. Like every room of the command line it imports the shared output.py and
client_options.py, never another room.
"""
