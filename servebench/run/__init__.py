"""One run composed: a server session, a measurement against it, the run directory written from what it left."""
