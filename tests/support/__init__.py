"""Test support code shared by the unit, integration and end-to-end tests and by the demo."""
