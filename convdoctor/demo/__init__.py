"""The embedded demo: everything on scikit-learn's digits, no downloads."""
