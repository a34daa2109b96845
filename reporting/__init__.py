"""report.py's wing: reading a run's results (runs), the words and tables (text), the
slides (slides), the listening page (listening, listening.html) and the references."""
