"""Workloom: orchestrate work done by people, AI agents and automations together."""

__version__ = "0.1.0"
