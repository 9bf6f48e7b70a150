"""article → post: teasers to each network's rules, the post ledger and its pace, link cards, the network clients."""
