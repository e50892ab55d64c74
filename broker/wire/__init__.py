"""Pure wire language shared by broker and clients: frames, types, error codes, limits."""
