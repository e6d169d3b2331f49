"""The live event feed."""
