"""Raw records -> numbers: stream decoding, metrics, the client verdict and the run verdict. Pure functions of what was recorded."""
