"""btcflow's command line; the work itself lives in pipeline/, training/ and serving/."""
