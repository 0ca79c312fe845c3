"""The ground every btcflow package stands on, importing no other btcflow package."""
