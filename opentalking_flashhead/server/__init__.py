"""A stand-in FlashHead service: OmniRT's protocol, no model, frames drawn and labelled "stand-in".

For demos, CI and ``render`` without a GPU. It is the other side of the wire and never imports
the client.
"""
