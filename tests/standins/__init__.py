"""Local servers that behave like the providers Cairn talks to, for tests only."""
