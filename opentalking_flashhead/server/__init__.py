"""The FlashHead service side: one protocol layer, the stand-in and resident renderers behind it."""
