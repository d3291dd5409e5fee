"""The service side, the other end of the wire (it never imports the client): one protocol layer
speaking OmniRT's HTTP API, with renderers behind it: the stand-in (drawn frames, labelled so) and
the resident model (``resident/``, the only place that imports torch or the model, lazily).
"""
