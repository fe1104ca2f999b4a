"""The worker's unit tests, a module each for the modules they test: run
them with `python3 -m unittest discover bridge` from the repository's root
(TestPythonWorker runs them)."""
