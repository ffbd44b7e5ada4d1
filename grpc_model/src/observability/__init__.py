"""What an operator watches a running server by: kept apart so every part of the server can report into it."""
