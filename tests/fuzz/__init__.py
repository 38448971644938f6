"""Fuzzing: connections built in every state, the harness both fuzzers drive, atheris targets."""
