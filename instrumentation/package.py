_instruments = ("a2a-sdk >= 1.1.2, < 1.4",)
