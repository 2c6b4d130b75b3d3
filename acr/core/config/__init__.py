"""Config kinds (schema.py) and the located YAML checker (loader.py)."""
