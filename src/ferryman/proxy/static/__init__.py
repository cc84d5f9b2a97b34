"""Static files: policy.py (pure rules: validators, conditionals, ranges, expires) and
serve.py (the file system and the writing)."""
