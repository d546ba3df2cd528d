"""Bytes in, pixels out, and back: decoding, composing and encoding images."""
