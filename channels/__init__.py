"""Channel providers, their supervision, and the path from an inbound message to a reply."""
