"""The resident FlashHead runtime: the model loaded once, every session's stream continued on one pipeline.

The only part of the package that imports torch or the model, and only when it is loaded.
"""
