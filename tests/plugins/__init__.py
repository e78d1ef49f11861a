"""Third-party products that plug into flech_sim from outside the package (no edit to the core)."""
