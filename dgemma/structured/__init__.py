"""Schema-guaranteed JSON through canvas constraints."""
