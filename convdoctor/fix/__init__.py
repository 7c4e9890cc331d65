"""Remedies: each function's docstring names the finding codes it answers.

Every remedy returns a new object or changes only what its name says; none is applied
behind the user's back.
"""

__all__: list[str] = []
