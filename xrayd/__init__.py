"""xrayd."""
