"""The simulator: one journey, one scripted contact, the real engine, on a skipping clock."""
