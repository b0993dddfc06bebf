"""Thin Typer commands: parse options, open inputs, call one library function, write outputs."""
