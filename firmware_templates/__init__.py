"""Jinja2 templates of the Arduino sketch (package data; see README.md in this folder)."""
