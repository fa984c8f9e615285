"""Text front ends: text -> normalised text -> phoneme symbols of the official v2 table."""
