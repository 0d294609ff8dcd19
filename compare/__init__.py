"""`unlearn compare` / `unlearn attack`: every system under test built (or reused) and measured the
same way, attacked the same way, and put side by side in one report."""
