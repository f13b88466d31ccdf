"""Hongyan (鸿雁): a self-hostable online SMS platform."""

__version__ = "0.1.0"
