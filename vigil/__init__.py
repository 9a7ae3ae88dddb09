"""Vigil: edge monitoring appliance for ceremony rooms (a monitoring aid, not a certified medical device)."""

__version__ = "0.1.0"
