# tested: 1.0.3, 1.1.1 (no aclose), 1.1.2, 1.2.3, 1.3.0 (tests/test_compat.py)
_instruments = ("a2a-sdk >= 1.0.3, < 1.4",)
