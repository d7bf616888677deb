"""Shared ground floor: recipe loading and validation, object building, run-directory layout,
atomic files, repository paths, the LLM client and the project's vocabulary. Imports no other
layer of the project."""
