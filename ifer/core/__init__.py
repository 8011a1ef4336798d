"""The ground floor: config, quirks, checkpoint loading, known weights, small shared utilities.

Nothing here imports any other ``ifer`` package (enforced by the import contracts in ``pyproject.toml``).
"""
