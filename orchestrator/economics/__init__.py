"""What things cost and how much one instance serves: catalog, latency profiles, capacity at SLO, the ledger."""
