"""Training: the search grid, training sets from Feast, one-config training runs, the leaderboard."""
