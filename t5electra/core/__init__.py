"""What every layer may use and that uses nothing of the package but ``errors``: atomic file
writes (``atomic``) and the model output types (``outputs``)."""
