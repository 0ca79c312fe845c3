"""The ground every btcflow package stands on: the dataset's format, the registry's rule, one error root,
logs, signals, progress, the default tracking store. It imports no other btcflow package."""
