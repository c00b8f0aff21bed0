"""Councils as judges on human-labelled data, and experiments that compare pools."""
