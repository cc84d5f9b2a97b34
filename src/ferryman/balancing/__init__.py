"""balancing package."""
