"""Hostile inputs, crashes and races: each test is an attack on one promise of docs/security.md."""
