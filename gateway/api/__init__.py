"""The HTTP surface: thin handlers over the service layer, one module per area."""
