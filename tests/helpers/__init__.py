"""Test helpers: the web client's chores (``web``), real servers on loopback ports
(``localserver``: gunicorn; ``pgserver``: PostgreSQL; ``orthanc``: a PACS), and the
fuzzing mutations (``fuzz_cases``)."""
