"""Faust agents (room and user pipelines), the web API, the CLI and the demo supervisor."""
