"""The base: column names, day rules, the errors a retry cannot fix, frame helpers and
memory figures. Imports nothing else of the package."""
