"""The night pass: council commentary on logged episodes, turned into preference data (see issue #5)."""
