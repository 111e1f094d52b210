"""sqllogictest files for tidegate, and the runner that plays them through the real pgwire server."""
