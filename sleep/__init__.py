"""The night pass: council commentary on logged episodes, preference pairs, and TRL-ready datasets."""
