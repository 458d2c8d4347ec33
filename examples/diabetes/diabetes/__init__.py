"""A worked example: tfdist training a regression model of a user's own."""
