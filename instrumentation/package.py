"""The libraries this instrumentation needs beside it, as ``opentelemetry-instrument``
reads them (the ``instruments-any`` extra, which must say the same: checked by
tests/test_packaging.py): any one of them installed.

No version bounds here, unlike contrib's: outside them the loader would skip
this instrumentation with one log line and the hop would vanish from the mesh.
The version guard (``backends.choose``) holds the tested ranges instead: it
refuses an untested release loudly and the hop reports itself unsupported, so
its cascades are held rather than unseen.
"""

INSTRUMENTS_ANY = ("a2a-sdk", "fasta2a")

# the names a contrib instrumentation's package.py gives them
_instruments: tuple[str, ...] = ()
_instruments_any = INSTRUMENTS_ANY
