"""Development and operator tooling: local server, resources from template.yaml, the sources CLI.

Not shipped in the Lambda layer.
"""
