"""What every layer may use and that uses nothing of the package but ``errors``: atomic file
writes (``atomic``), the model output types (``outputs``) and the typed-config core
(``typed_config``: documented fields, coercion, checked keys)."""
