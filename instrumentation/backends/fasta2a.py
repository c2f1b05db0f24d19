"""fasta2a (pydantic-ai's A2A server): filled in below."""

BACKENDS: tuple = ()
