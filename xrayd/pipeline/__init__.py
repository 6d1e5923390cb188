"""One radiograph's way through xrayd: receive -> analyse -> result objects -> delivery."""
