"""The `syndicate` command: one group per area, and the demo that runs on embedded defaults."""
