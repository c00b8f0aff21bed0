"""The vocabulary every layer shares: errors, settings, episode records, text helpers; imports nothing above."""
