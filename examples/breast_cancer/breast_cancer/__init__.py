"""A worked example: tfdist training a tabular model of a user's own."""
