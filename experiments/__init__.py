"""Jobs (benchmark; train, evaluate and sample come with the models) and their machinery."""
